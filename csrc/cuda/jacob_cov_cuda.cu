// zcfast::jacob_cov_score on CUDA. jacobians [M, N, D] -> (scores [M], eigenvalues [M, N]).
// One block per Jacobian row computes its mean and centred norm in float64 and writes the
// centred unit-norm row (NaN for a zero-variance or non-finite row); jacob_cov_finish
// (csrc/common) then forms corr = Z Z^T, solves the symmetric eigenproblems (batched, via
// ATen) and scores. See Note [jacob_cov precision] and Note [jacob_cov degenerate rows].
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "block_reduce.cuh"
#include "zcfast/checks.h"
#include "zcfast/jacob_cov.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kRowThreads = 256;

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads)
normalise_rows_kernel(const scalar_t* __restrict__ x, int64_t D, double* __restrict__ z) {
  const int64_t row = blockIdx.x;
  const scalar_t* xr = x + row * D;
  double* zr = z + row * D;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += static_cast<double>(xr[i]);
  const double mean = D > 0 ? block_sum_broadcast(s) / static_cast<double>(D) : 0.0;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const double d = static_cast<double>(xr[i]) - mean;
    ss += d * d;
  }
  ss = block_sum_broadcast(ss);
  const bool ok = ss > 0.0 && isfinite(ss);
  const double inv = ok ? rsqrt(ss) : 0.0;
  const double nan = __longlong_as_double(0x7ff8000000000000LL);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    zr[i] = ok ? (static_cast<double>(xr[i]) - mean) * inv : nan;
  }
}

std::tuple<at::Tensor, at::Tensor> jacob_cov_cuda(const at::Tensor& jacobians, double k) {
  check_jacob_cov_inputs(jacobians, k);
  TORCH_CHECK_VALUE(jacobians.is_cuda(), "jacob_cov: jacobians is on ", jacobians.device(),
                    ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(jacobians.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor jac = jacobians.contiguous();
  const int64_t rows = jac.size(0) * jac.size(1), D = jac.size(2);
  TORCH_CHECK_VALUE(rows < (int64_t(1) << 31), "jacob_cov: jacobians has M*N = ", rows,
                    " rows, more than one CUDA grid holds");
  at::Tensor z = at::empty(jac.sizes(), jac.options().dtype(at::kDouble));
  if (rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, jac.scalar_type(), "jacob_cov_cuda", [&] {
      normalise_rows_kernel<scalar_t><<<rows, kRowThreads, 0, stream>>>(
          jac.const_data_ptr<scalar_t>(), D, z.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return jacob_cov_finish(z, k, acc_dtype_for(jac.scalar_type()));
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("jacob_cov_score", &cuda::jacob_cov_cuda);
}

}  // namespace zcfast

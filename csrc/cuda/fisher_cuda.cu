// zcfast::fisher_reduce on CUDA: the Fisher proxy's per-channel term for one layer.
//   act, grad : [N, C, *rest];  s[n, c] = sum_rest act*grad
//   per_channel[c] = 0.5 * mean_n s[n, c]^2,  total = sum_c per_channel[c]
// Three kernels: one block per (n, c) row for s; one block per channel for the mean of squares;
// one block for the total (Note [deterministic reductions]: no atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "block_reduce.cuh"
#include "zcfast/checks.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kFisherThreads = 256;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kFisherThreads)
fisher_rows_kernel(const scalar_t* __restrict__ act, const scalar_t* __restrict__ grad, int64_t R,
                   acc_t* __restrict__ s) {
  const int64_t row = blockIdx.x;
  const scalar_t* a = act + row * R;
  const scalar_t* g = grad + row * R;
  acc_t acc = acc_t(0);
  for (int64_t i = threadIdx.x; i < R; i += blockDim.x) {
    acc += static_cast<acc_t>(a[i]) * static_cast<acc_t>(g[i]);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) s[row] = acc;
}

template <typename acc_t>
__global__ void __launch_bounds__(kFisherThreads)
fisher_channels_kernel(const acc_t* __restrict__ s, int64_t N, int64_t C,
                       acc_t* __restrict__ per_channel) {
  const int64_t c = blockIdx.x;
  acc_t acc = acc_t(0);
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const acc_t v = s[n * C + c];
    acc += v * v;
  }
  acc = block_sum(acc);
  // N == 0 gives 0/0 = NaN, as the mean of nothing (and as the CPU kernel).
  if (threadIdx.x == 0) per_channel[c] = acc_t(0.5) * acc / static_cast<acc_t>(N);
}

std::tuple<at::Tensor, at::Tensor> fisher_cuda(const at::Tensor& act, const at::Tensor& grad) {
  check_fisher_inputs(act, grad);
  TORCH_CHECK_VALUE(act.is_cuda(), "fisher: act is on ", act.device(), ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(act.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = act.size(0), C = act.size(1);
  const int64_t R = (N * C == 0) ? 0 : act.numel() / (N * C);
  TORCH_CHECK_VALUE(N * C < (int64_t(1) << 31) && C < (int64_t(1) << 31),
                    "fisher: act has N*C = ", N * C, " rows, more than one CUDA grid holds");
  auto opts = act.options().dtype(acc_dtype_for(act.scalar_type()));
  at::Tensor per_channel = at::empty({C}, opts);
  at::Tensor total = at::empty({}, opts);
  at::Tensor s = at::empty({std::max<int64_t>(N * C, 1)}, opts);
  const at::Tensor a = act.contiguous(), g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, act.scalar_type(), "fisher_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (N * C > 0) {
      // A block per (n, c) row; a single warp when the rows are short (e.g. Linear layers).
      const int threads = R >= kFisherThreads ? kFisherThreads : kWarp;
      fisher_rows_kernel<scalar_t, acc_t><<<N * C, threads, 0, stream>>>(
          a.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), R, s.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (C > 0) {
      fisher_channels_kernel<acc_t><<<C, kFisherThreads, 0, stream>>>(
          s.const_data_ptr<acc_t>(), N, C, per_channel.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    sum_vector_kernel<acc_t><<<1, kFisherThreads, 0, stream>>>(
        per_channel.const_data_ptr<acc_t>(), C, total.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {per_channel, total};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("fisher_reduce", &cuda::fisher_cuda);
}

}  // namespace zcfast

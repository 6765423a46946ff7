// zcfast::box_sum on CUDA (formula, order and the proxies it serves: zcfast/box.h):
//   out[..., i, j] = sum of z[..., i + dh, j + dw] over the kh x kw window, row-major, in-bounds.
// One thread per output (grid-stride), box_window_sum of the shared header: the same additions in
// the same order as the CPU kernel, so both give the same values; deterministic, no atomics.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "zcfast/box.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kBoxThreads = 256;
constexpr int64_t kMaxGrid = 65535 * 8;

template <typename scalar_t>
__global__ void __launch_bounds__(kBoxThreads)
box_sum_kernel(const scalar_t* __restrict__ z, scalar_t* __restrict__ out, int64_t total, int64_t H,
               int64_t W, int64_t rh, int64_t rw) {
  const int64_t plane = H * W;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kBoxThreads;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * kBoxThreads + threadIdx.x; k < total; k += step) {
    const int64_t p = k / plane, q = k % plane;
    out[k] = box_window_sum<scalar_t>(z + p * plane, H, W, q / W, q % W, rh, rw);
  }
}

at::Tensor box_sum_cuda(const at::Tensor& z_in, int64_t kh, int64_t kw) {
  check_box_sum_inputs(z_in, kh, kw);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous();
  at::Tensor out = at::empty_like(z, at::MemoryFormat::Contiguous);
  const int64_t total = z.numel();
  if (total == 0) return out;
  const int64_t H = z.size(-2), W = z.size(-1);
  const int64_t blocks = std::min<int64_t>(kMaxGrid, (total + kBoxThreads - 1) / kBoxThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "box_sum_cuda", [&] {
    box_sum_kernel<scalar_t><<<static_cast<unsigned>(blocks), kBoxThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total, H, W, kh / 2, kw / 2);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("box_sum", &cuda::box_sum_cuda);
}

}  // namespace zcfast

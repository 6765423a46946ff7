// zcfast::batch_norm_cl and zcfast::batch_norm_cl_backward on CUDA (formulas, block order and the
// proxies they serve: zcfast/batch_norm_cl.h): train-mode BatchNorm2d of a channels_last
// [N, C, H, W] tensor with float64 statistics, and its backward.
// Each sum: one CUDA block per (row block of kBnRowBlock rows, group of 32 channels); thread
// (lane, j) adds rows j, j + 8, ... of its channel in order, the 8 partials of a channel are added
// in j order in shared memory, and the row blocks' partials go to distinct slots that a second
// kernel adds per channel in block order. Deterministic, no atomics; the blocks are the CPU
// kernel's, but the order inside a block differs, so CPU and CUDA agree to float64 rounding.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "zcfast/batch_norm_cl.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kLanes = 32;   // channels per CUDA block
constexpr int kRowThreads = 8;  // row strides per channel

// kind 0: Σ x; 1: Σ (x - mean)²; 2: Σ g and Σ g (x - mean) (two outputs: partial[b, 2C]).
template <typename scalar_t, int kind>
__global__ void bn_partial_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                  const double* __restrict__ mean, double* __restrict__ partial, int64_t rows,
                                  int64_t C) {
  __shared__ double s0[kRowThreads][kLanes];
  __shared__ double s1[kRowThreads][kLanes];
  const int lane = threadIdx.x, j = threadIdx.y;
  const int64_t b = blockIdx.x, c = static_cast<int64_t>(blockIdx.y) * kLanes + lane;
  double a0 = 0.0, a1 = 0.0;
  if (c < C) {
    const double m = kind == 0 ? 0.0 : mean[c];
    const int64_t r1 = (b + 1) * kBnRowBlock < rows ? (b + 1) * kBnRowBlock : rows;
    for (int64_t r = b * kBnRowBlock + j; r < r1; r += kRowThreads) {
      const double v = static_cast<double>(x[r * C + c]);
      if (kind == 0) {
        a0 += v;
      } else if (kind == 1) {
        a0 += (v - m) * (v - m);
      } else {
        const double gv = static_cast<double>(g[r * C + c]);
        a0 += gv;
        a1 += gv * (v - m);
      }
    }
  }
  s0[j][lane] = a0;
  s1[j][lane] = a1;
  __syncthreads();
  if (j == 0 && c < C) {
    double t0 = 0.0, t1 = 0.0;
    for (int k = 0; k < kRowThreads; ++k) {
      t0 += s0[k][lane];
      t1 += s1[k][lane];
    }
    if (kind == 2) {
      partial[b * 2 * C + c] = t0;
      partial[b * 2 * C + C + c] = t1;
    } else {
      partial[b * C + c] = t0;
    }
  }
}

// out[c] = Σ_b partial[b, c] / divisor, in block order (width: the row length of partial).
__global__ void bn_finish_kernel(const double* __restrict__ partial, double* __restrict__ out, int64_t blocks,
                                 int64_t width, double divisor) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  double s = 0.0;
  for (int64_t b = 0; b < blocks; ++b) s += partial[b * width + c];
  out[c] = s / divisor;
}

template <typename scalar_t>
__global__ void bn_normalise_kernel(const scalar_t* __restrict__ x, const double* __restrict__ mean,
                                    const double* __restrict__ var, const double* __restrict__ w,
                                    const double* __restrict__ bias, scalar_t* __restrict__ y, int64_t total,
                                    int64_t C, double eps) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += step) {
    const int64_t c = k % C;
    y[k] = static_cast<scalar_t>(bn_normalise(static_cast<double>(x[k]), mean[c], bn_invstd(var[c], eps) * w[c],
                                              bias[c]));
  }
}

template <typename scalar_t>
__global__ void bn_input_grad_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                     const double* __restrict__ mean, const double* __restrict__ var,
                                     const double* __restrict__ w, const double* __restrict__ sums,
                                     scalar_t* __restrict__ gx, int64_t total, int64_t C, double rows, double eps) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += step) {
    const int64_t c = k % C;
    const BnGradCoefs q = bn_grad_coefs(w[c], bn_invstd(var[c], eps), sums[c], sums[C + c], rows);
    gx[k] = static_cast<scalar_t>(bn_input_grad(static_cast<double>(g[k]), static_cast<double>(x[k]), mean[c], q.a,
                                                q.gmean, q.b));
  }
}

at::Tensor channel_values(const c10::optional<at::Tensor>& t, const at::Tensor& x, double fill) {
  if (t.has_value() && t->defined()) return t->to(at::kDouble).contiguous();
  return fill == 0.0 ? at::zeros({x.size(1)}, x.options().dtype(at::kDouble))
                     : at::ones({x.size(1)}, x.options().dtype(at::kDouble));
}

dim3 partial_grid(int64_t blocks, int64_t C) {
  return dim3(static_cast<unsigned>(blocks), static_cast<unsigned>((C + kLanes - 1) / kLanes));
}

unsigned elementwise_blocks(int64_t total) {
  return static_cast<unsigned>(std::min<int64_t>(65535 * 8, (total + 255) / 256));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_cl_cuda(const at::Tensor& x_in,
                                                                  const c10::optional<at::Tensor>& weight,
                                                                  const c10::optional<at::Tensor>& bias, double eps) {
  check_bn_cl_inputs("batch_norm_cl", x_in, weight, bias, eps);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1), rows = x.numel() / C, blocks = bn_row_blocks(rows);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  const auto dopt = x.options().dtype(at::kDouble);
  at::Tensor partial = at::empty({blocks, C}, dopt), mean = at::empty({C}, dopt), var = at::empty({C}, dopt);
  const at::Tensor w = channel_values(weight, x, 1.0), b = channel_values(bias, x, 0.0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 threads(kLanes, kRowThreads);
  const unsigned fin = static_cast<unsigned>((C + 255) / 256);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_cl_cuda", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    bn_partial_kernel<scalar_t, 0><<<partial_grid(blocks, C), threads, 0, stream>>>(
        xp, nullptr, nullptr, partial.mutable_data_ptr<double>(), rows, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bn_finish_kernel<<<fin, 256, 0, stream>>>(partial.const_data_ptr<double>(), mean.mutable_data_ptr<double>(),
                                              blocks, C, static_cast<double>(rows));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bn_partial_kernel<scalar_t, 1><<<partial_grid(blocks, C), threads, 0, stream>>>(
        xp, nullptr, mean.const_data_ptr<double>(), partial.mutable_data_ptr<double>(), rows, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bn_finish_kernel<<<fin, 256, 0, stream>>>(partial.const_data_ptr<double>(), var.mutable_data_ptr<double>(),
                                              blocks, C, static_cast<double>(rows));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bn_normalise_kernel<scalar_t><<<elementwise_blocks(x.numel()), 256, 0, stream>>>(
        xp, mean.const_data_ptr<double>(), var.const_data_ptr<double>(), w.const_data_ptr<double>(),
        b.const_data_ptr<double>(), y.mutable_data_ptr<scalar_t>(), x.numel(), C, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_cl_backward_cuda(
    const at::Tensor& gy_in, const at::Tensor& x_in, const c10::optional<at::Tensor>& weight,
    const at::Tensor& mean, const at::Tensor& var, double eps) {
  check_bn_cl_inputs("batch_norm_cl_backward", x_in, weight, c10::nullopt, eps);
  check_bn_cl_backward_inputs(gy_in, x_in, mean, var);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = gy_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1), rows = x.numel() / C, blocks = bn_row_blocks(rows);
  const auto dopt = x.options().dtype(at::kDouble);
  at::Tensor partial = at::empty({blocks, 2 * C}, dopt), sums = at::empty({2 * C}, dopt);
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  const at::Tensor w = channel_values(weight, x, 1.0);
  const at::Tensor m = mean.contiguous(), v = var.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_cl_backward_cuda", [&] {
    bn_partial_kernel<scalar_t, 2><<<partial_grid(blocks, C), dim3(kLanes, kRowThreads), 0, stream>>>(
        x.const_data_ptr<scalar_t>(), gy.const_data_ptr<scalar_t>(), m.const_data_ptr<double>(),
        partial.mutable_data_ptr<double>(), rows, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bn_finish_kernel<<<static_cast<unsigned>((2 * C + 255) / 256), 256, 0, stream>>>(
        partial.const_data_ptr<double>(), sums.mutable_data_ptr<double>(), blocks, 2 * C, 1.0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    bn_input_grad_kernel<scalar_t><<<elementwise_blocks(x.numel()), 256, 0, stream>>>(
        gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), m.const_data_ptr<double>(),
        v.const_data_ptr<double>(), w.const_data_ptr<double>(), sums.const_data_ptr<double>(),
        gx.mutable_data_ptr<scalar_t>(), x.numel(), C, static_cast<double>(rows), eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // gweight = Σ g (x - mean) · invstd, gbias = Σ g: [C] of x's dtype
  const at::Tensor invstd = v.add(eps).rsqrt();
  at::Tensor gw = sums.slice(0, C, 2 * C).mul(invstd).to(x.scalar_type());
  at::Tensor gb = sums.slice(0, 0, C).to(x.scalar_type());
  return {gx, gw, gb};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("batch_norm_cl", &cuda::batch_norm_cl_cuda);
  m.impl("batch_norm_cl_backward", &cuda::batch_norm_cl_backward_cuda);
}

}  // namespace zcfast

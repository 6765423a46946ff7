// zcfast::moments_update_ and zcfast::zico_reduce on CUDA: ZiCo (Li et al. 2023, "zico").
//   moments_update_: per gradient element, one Welford step in float64 on the state, in place
//     (welford_step in zcfast/modern.h; n = count + 1; count 0 overwrites: welford_first).
//   zico_reduce: per tensor, sum of mean_abs / sqrt(m2 / count) over elements with m2 != 0.
// Both use the chunked multi-tensor launches of Note [chunking for list reductions]: one block
// per kChunk elements of a tensor, launch metadata passed by value. The update is element-wise
// (one launch series per gradient dtype); the reduction writes one partial per block and a
// finishing kernel sums each tensor's partials in order (Note [deterministic reductions]).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "block_reduce.cuh"
#include "multi_tensor_apply.cuh"
#include "zcfast/checks.h"
#include "zcfast/list_plan.h"
#include "zcfast/modern.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kThreads = 512;

struct MomentsMeta {
  const void* g[kMaxTensors];
  double* mean_abs[kMaxTensors];
  double* mean[kMaxTensors];
  double* m2[kMaxTensors];
  int64_t numel[kMaxTensors];
  uint16_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(MomentsMeta) <= 32000, "kernel argument must stay below CUDA's 32764-byte limit");

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
moments_update_kernel(const MomentsMeta meta, double n) {
  const int slot = meta.block_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_chunk[blockIdx.x]) * kChunk;
  const int64_t len = ::min(kChunk, meta.numel[slot] - start);
  const scalar_t* __restrict__ g = static_cast<const scalar_t*>(meta.g[slot]) + start;
  double* __restrict__ ma = meta.mean_abs[slot] + start;
  double* __restrict__ mu = meta.mean[slot] + start;
  double* __restrict__ m2 = meta.m2[slot] + start;
  if (n == 1.0) {  // count 0: the state is overwritten, never read (welford_first)
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      welford_first(static_cast<double>(g[i]), ma[i], mu[i], m2[i]);
    }
    return;
  }
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    double a = ma[i], m = mu[i], v = m2[i];
    welford_step(static_cast<double>(g[i]), n, a, m, v);
    ma[i] = a;
    mu[i] = m;
    m2[i] = v;
  }
}

__global__ void __launch_bounds__(kThreads)
zico_chunk_kernel(const ListMeta meta, double n, double* __restrict__ partials) {
  const int slot = meta.block_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_chunk[blockIdx.x]) * kChunk;
  const int64_t len = ::min(kChunk, meta.numel[slot] - start);
  const double* __restrict__ ma = static_cast<const double*>(meta.a[slot]) + start;
  const double* __restrict__ m2 = static_cast<const double*>(meta.b[slot]) + start;
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) acc += zico_term(ma[i], m2[i], n);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[meta.partial_base + blockIdx.x] = acc;
}

__global__ void __launch_bounds__(kThreads)
zico_finish_kernel(const FinishMeta meta, const double* __restrict__ partials,
                   double* __restrict__ out) {
  const int i = blockIdx.x;
  double acc = 0.0;
  for (int64_t c = meta.offset[i] + threadIdx.x; c < meta.offset[i + 1]; c += blockDim.x) acc += partials[c];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[meta.first_tensor + i] = acc;
}

void moments_update_cuda(at::TensorList grads, at::TensorList mean_abs, at::TensorList mean,
                         at::TensorList m2, int64_t count) {
  check_moments_update_inputs(grads, mean_abs, mean, m2, count);
  if (grads.empty()) return;
  TORCH_CHECK_VALUE(grads[0].is_cuda(), "moments_update: grads[0] is on ", grads[0].device(),
                    ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(grads[0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t T = static_cast<int64_t>(grads.size());
  std::vector<at::Tensor> keep(T);
  for (int64_t t = 0; t < T; ++t) keep[t] = grads[t].contiguous();
  const double n = static_cast<double>(count + 1);
  // One launch series per gradient dtype (a list may mix them; the usual list has one).
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    std::vector<int64_t> idx, numel;
    for (int64_t t = 0; t < T; ++t) {
      if (keep[t].scalar_type() == dtype) idx.push_back(t), numel.push_back(keep[t].numel());
    }
    if (idx.empty()) continue;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "moments_update_cuda", [&] {
      MomentsMeta meta;
      plan_list_launches(
          numel, kChunk, kMaxTensors, kMaxBlocks,
          [&](int slot, int64_t k) {
            const int64_t t = idx[k];
            meta.g[slot] = keep[t].const_data_ptr();
            meta.mean_abs[slot] = mean_abs[t].data_ptr<double>();
            meta.mean[slot] = mean[t].data_ptr<double>();
            meta.m2[slot] = m2[t].data_ptr<double>();
            meta.numel[slot] = numel[k];
          },
          [&](int b, int slot, int64_t c) {
            meta.block_tensor[b] = static_cast<uint16_t>(slot);
            meta.block_chunk[b] = static_cast<int32_t>(c);
          },
          [&](int nb, int64_t) {
            moments_update_kernel<scalar_t><<<nb, kThreads, 0, stream>>>(meta, n);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
    });
  }
}

at::Tensor zico_reduce_cuda(at::TensorList mean_abs, at::TensorList m2, int64_t count) {
  check_zico_reduce_inputs(mean_abs, m2, count);
  const int64_t T = static_cast<int64_t>(mean_abs.size());
  TORCH_CHECK_VALUE(T > 0 && mean_abs[0].is_cuda(), "zico_reduce: mean_abs[0] must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(mean_abs[0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto opts = mean_abs[0].options();
  at::Tensor out = at::empty({T}, opts);
  std::vector<int64_t> numel(T), offset(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    numel[t] = mean_abs[t].numel();
    offset[t + 1] = offset[t] + (numel[t] + kChunk - 1) / kChunk;
  }
  TORCH_CHECK(offset[T] < std::numeric_limits<int32_t>::max(), "zico_reduce: too many elements");
  at::Tensor partials = at::empty({std::max<int64_t>(offset[T], 1)}, opts);
  double* partials_ptr = partials.data_ptr<double>();
  const double n = static_cast<double>(count);
  ListMeta meta;
  plan_list_launches(
      numel, kChunk, kMaxTensors, kMaxBlocks,
      [&](int slot, int64_t t) {
        meta.a[slot] = mean_abs[t].const_data_ptr();
        meta.b[slot] = m2[t].const_data_ptr();
        meta.numel[slot] = numel[t];
      },
      [&](int b, int slot, int64_t c) {
        meta.block_tensor[b] = static_cast<uint16_t>(slot);
        meta.block_chunk[b] = static_cast<int32_t>(c);
      },
      [&](int nb, int64_t first_block) {
        meta.partial_base = first_block;
        zico_chunk_kernel<<<nb, kThreads, 0, stream>>>(meta, n, partials_ptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  FinishMeta fmeta;
  for (int64_t first = 0; first < T; first += kFinishMaxTensors) {
    const int64_t cnt = std::min<int64_t>(kFinishMaxTensors, T - first);
    fmeta.first_tensor = first;
    for (int64_t i = 0; i <= cnt; ++i) fmeta.offset[i] = static_cast<int32_t>(offset[first + i]);
    zico_finish_kernel<<<cnt, kThreads, 0, stream>>>(fmeta, partials_ptr, out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("moments_update_", &cuda::moments_update_cuda);
  m.impl("zico_reduce", &cuda::zico_reduce_cuda);
}

}  // namespace zcfast

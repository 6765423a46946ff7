// zcfast::saliency_reduce on CUDA: per-tensor sums of |theta*g|, theta*g, g^2 (then a root) or
// theta^2 over a whole list of parameters; serves snip, synflow, plain, grad_norm and l2_norm.
// One chunk kernel launch per kMaxTensors tensors / kMaxBlocks chunks (one launch for a typical
// network), then a finishing kernel per kFinishMaxTensors tensors and one kernel for the total.
// See Note [chunking for list reductions] and Note [deterministic reductions].
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "block_reduce.cuh"
#include "multi_tensor_apply.cuh"
#include "zcfast/checks.h"
#include "zcfast/list_plan.h"
#include "zcfast/reduce_kind.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kThreads = 512;

template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t v[kSize];
};

template <typename scalar_t, typename acc_t, SaliencyKind K>
__global__ void __launch_bounds__(kThreads)
saliency_chunk_kernel(const ListMeta meta, acc_t* __restrict__ partials) {
  const int slot = meta.block_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_chunk[blockIdx.x]) * kChunk;
  const int64_t len = ::min(kChunk, meta.numel[slot] - start);
  const scalar_t* __restrict__ p = static_cast<const scalar_t*>(meta.a[slot]) + start;
  const scalar_t* __restrict__ g = static_cast<const scalar_t*>(meta.b[slot]) + start;

  acc_t acc = acc_t(0);
  using V = Vec16<scalar_t>;
  const bool p_ok = !kind_reads_params(K) || reinterpret_cast<uintptr_t>(p) % sizeof(V) == 0;
  const bool g_ok = !kind_reads_grads(K) || reinterpret_cast<uintptr_t>(g) % sizeof(V) == 0;
  int64_t done = 0;
  if (p_ok && g_ok) {
    const int64_t nvec = len / V::kSize;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      V pv, gv;
      if constexpr (kind_reads_params(K)) pv = reinterpret_cast<const V*>(p)[i];
      if constexpr (kind_reads_grads(K)) gv = reinterpret_cast<const V*>(g)[i];
#pragma unroll
      for (int j = 0; j < V::kSize; ++j) {
        const acc_t a = kind_reads_params(K) ? static_cast<acc_t>(pv.v[j]) : acc_t(0);
        const acc_t b = kind_reads_grads(K) ? static_cast<acc_t>(gv.v[j]) : acc_t(0);
        acc += saliency_term<K, acc_t>(a, b);
      }
    }
    done = nvec * V::kSize;
  }
  for (int64_t i = done + threadIdx.x; i < len; i += blockDim.x) {
    const acc_t a = kind_reads_params(K) ? static_cast<acc_t>(p[i]) : acc_t(0);
    const acc_t b = kind_reads_grads(K) ? static_cast<acc_t>(g[i]) : acc_t(0);
    acc += saliency_term<K, acc_t>(a, b);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[meta.partial_base + blockIdx.x] = acc;
}

template <typename acc_t, SaliencyKind K>
__global__ void __launch_bounds__(kThreads)
saliency_finish_kernel(const FinishMeta meta, const acc_t* __restrict__ partials,
                       acc_t* __restrict__ per_tensor) {
  const int i = blockIdx.x;
  acc_t acc = acc_t(0);
  for (int64_t c = meta.offset[i] + threadIdx.x; c < meta.offset[i + 1]; c += blockDim.x) {
    acc += partials[c];
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) per_tensor[meta.first_tensor + i] = saliency_finish<K, acc_t>(acc);
}

template <typename scalar_t, SaliencyKind K>
void saliency_cuda_impl(const std::vector<const void*>& pp, const std::vector<const void*>& gp,
                        const std::vector<int64_t>& numel, at::Tensor& per_tensor,
                        at::Tensor& total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t T = static_cast<int64_t>(numel.size());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  std::vector<int64_t> offset(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) offset[t + 1] = offset[t] + (numel[t] + kChunk - 1) / kChunk;
  const int64_t total_chunks = offset[T];
  TORCH_CHECK(total_chunks < std::numeric_limits<int32_t>::max(), "saliency: too many elements");
  at::Tensor partials = at::empty({std::max<int64_t>(total_chunks, 1)}, per_tensor.options());
  acc_t* partials_ptr = partials.data_ptr<acc_t>();

  // Chunk launches (see Note [chunking for list reductions]; the packing is plan_list_launches,
  // tested on CPU through zcfast::_plan_list_launches).
  ListMeta meta;
  const int64_t base = plan_list_launches(
      numel, kChunk, kMaxTensors, kMaxBlocks,
      [&](int slot, int64_t t) {
        meta.a[slot] = pp[t];
        meta.b[slot] = gp[t];
        meta.numel[slot] = numel[t];
      },
      [&](int b, int slot, int64_t c) {
        meta.block_tensor[b] = static_cast<uint16_t>(slot);
        meta.block_chunk[b] = static_cast<int32_t>(c);
      },
      [&](int nb, int64_t first_block) {
        meta.partial_base = first_block;
        saliency_chunk_kernel<scalar_t, acc_t, K><<<nb, kThreads, 0, stream>>>(meta, partials_ptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  TORCH_INTERNAL_ASSERT(base == total_chunks);

  // Per-tensor values, then the total.
  acc_t* out = per_tensor.data_ptr<acc_t>();
  FinishMeta fmeta;
  for (int64_t first = 0; first < T; first += kFinishMaxTensors) {
    const int64_t count = std::min<int64_t>(kFinishMaxTensors, T - first);
    fmeta.first_tensor = first;
    for (int64_t i = 0; i <= count; ++i) fmeta.offset[i] = static_cast<int32_t>(offset[first + i]);
    saliency_finish_kernel<acc_t, K><<<count, kThreads, 0, stream>>>(fmeta, partials_ptr, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  sum_vector_kernel<acc_t><<<1, kThreads, 0, stream>>>(out, T, total.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> saliency_cuda(at::TensorList params, at::TensorList grads,
                                                 c10::string_view kind) {
  const SaliencyKind k =
      check_saliency_inputs(params, grads, std::string_view(kind.data(), kind.size()));
  TORCH_CHECK_VALUE(!params.empty(), "saliency: params is empty");
  TORCH_CHECK_VALUE(params[0].is_cuda(), "saliency: params[0] is on ", params[0].device(),
                    ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(params[0].device());
  const int64_t T = static_cast<int64_t>(params.size());
  const at::ScalarType dtype = params[0].scalar_type();
  auto opts = params[0].options().dtype(acc_dtype_for(dtype));
  at::Tensor per_tensor = at::empty({T}, opts);
  at::Tensor total = at::empty({}, opts);

  std::vector<at::Tensor> keep;  // contiguous copies of non-contiguous inputs
  std::vector<const void*> pp(T), gp(T);
  std::vector<int64_t> numel(T);
  for (int64_t t = 0; t < T; ++t) {
    if (kind_reads_params(k) && !params[t].is_contiguous()) {
      keep.push_back(params[t].contiguous());
      pp[t] = keep.back().const_data_ptr();
    } else {
      pp[t] = params[t].const_data_ptr();
    }
    if (kind_reads_grads(k) && !grads[t].is_contiguous()) {
      keep.push_back(grads[t].contiguous());
      gp[t] = keep.back().const_data_ptr();
    } else {
      gp[t] = grads[t].const_data_ptr();
    }
    numel[t] = params[t].numel();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "saliency_cuda", [&] {
    ZCFAST_DISPATCH_SALIENCY_KIND(k, [&] {
      saliency_cuda_impl<scalar_t, KIND>(pp, gp, numel, per_tensor, total);
    });
  });
  return {per_tensor, total};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("saliency_reduce", &cuda::saliency_cuda);
}

}  // namespace zcfast

// zcfast::sign_pack, distinct_rows, sign_pattern_count and sign_sum on CUDA (issue #13):
//   sign_pack(x [R, L])  -> int64 [R, ceil(L/64)],  bit j of word w of row r = (x[r, 64w + j] > 0)
//   distinct_rows(p [R, W]) -> number of distinct rows;  sign_pattern_count(x) = that of sign_pack(x)
//   sign_sum(grads)      -> float64 [T],  out[t] = sum_theta | sum_i sign(g_t[i, theta]) |
// for SWAP (x = activations transposed, [neurons, B]), TE-NAS's linear regions (x = [B, neurons])
// and GradSign (per-sample gradients). Math and checks: zcfast/signs.h.
//
// sign_pack: a row-contiguous x is packed by warps, one 64-bit word per warp (two coalesced loads
// of 32 features and two __ballot_sync); a column-contiguous x (a transposed view, SWAP's case) by
// one thread per (row, word) looping over the 64 columns, so that consecutive threads read
// consecutive rows (coalesced). distinct_rows sorts on the device (ATen's unique, lexicographic
// for W > 1) and counts. sign_sum uses the chunked multi-tensor launches of
// Note [chunking for list reductions] over columns: one block per kColChunk columns of one tensor,
// each thread sums the signs of a column over the N samples in an int32 register (|s| <= N),
// the block sums |s| in int64 (block_sum: no atomics), one partial per block, and a finishing
// kernel adds each tensor's partials in order. Integers: exact and deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_unique2.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/unique_dim.h>
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
#include "zcfast/list_plan.h"
#include "zcfast/signs.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kPackThreads = 256;
constexpr int kSumThreads = 256;
constexpr int64_t kColChunk = 2048;  // columns per sign_sum block
constexpr int64_t kMaxGrid = 65535 * 8;

// One warp per word (r, w) of a row-major x (row stride ld, unit column stride).
template <typename scalar_t>
__global__ void __launch_bounds__(kPackThreads)
sign_pack_rows_kernel(const scalar_t* __restrict__ x, int64_t R, int64_t L, int64_t ld, int64_t W,
                      uint64_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kPackThreads / kWarp);
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * (kPackThreads / kWarp) + threadIdx.x / kWarp;
       k < R * W; k += warps) {  // k is uniform in a warp: whole warps take part in the ballots
    const int64_t r = k / W, w = k % W;
    const scalar_t* row = x + r * ld;
    const int64_t l0 = w * kSignWordBits + lane, l1 = l0 + kWarp;
    const bool b0 = l0 < L && sign_bit(static_cast<acc_t>(row[l0]));
    const bool b1 = l1 < L && sign_bit(static_cast<acc_t>(row[l1]));
    const uint32_t lo = __ballot_sync(0xffffffffu, b0);
    const uint32_t hi = __ballot_sync(0xffffffffu, b1);
    if (lane == 0) out[r * W + w] = (static_cast<uint64_t>(hi) << 32) | lo;
  }
}

// One thread per word (r, w) of a column-major x (x[r, l] at x[r + l * ld]).
template <typename scalar_t>
__global__ void __launch_bounds__(kPackThreads)
sign_pack_cols_kernel(const scalar_t* __restrict__ x, int64_t R, int64_t L, int64_t ld, int64_t W,
                      uint64_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < R * W; k += threads) {
    const int64_t w = k / R, r = k % R;  // r fastest: coalesced reads
    const int64_t l0 = w * kSignWordBits, l1 = ::min(L, l0 + kSignWordBits);
    uint64_t word = 0;
    for (int64_t l = l0; l < l1; ++l) {
      word |= static_cast<uint64_t>(sign_bit(static_cast<acc_t>(x[r + l * ld]))) << (l - l0);
    }
    out[r * W + w] = word;
  }
}

void pack_into(const at::Tensor& x, at::Tensor& out) {
  const int64_t R = x.size(0), L = x.size(1), W = sign_words(L);
  if (R == 0 || W == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool col_major = x.stride(0) == 1 && x.stride(1) != 1 && R > 1;
  const at::Tensor xc = col_major || x.stride(1) == 1 || L == 1 ? x : x.contiguous();
  uint64_t* o = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "sign_pack_cuda", [&] {
    const scalar_t* base = xc.const_data_ptr<scalar_t>();
    if (col_major) {
      const int64_t blocks = std::min<int64_t>((R * W + kPackThreads - 1) / kPackThreads, kMaxGrid);
      sign_pack_cols_kernel<scalar_t><<<blocks, kPackThreads, 0, stream>>>(base, R, L, xc.stride(1), W, o);
    } else {
      const int64_t per_block = kPackThreads / kWarp;
      const int64_t blocks = std::min<int64_t>((R * W + per_block - 1) / per_block, kMaxGrid);
      sign_pack_rows_kernel<scalar_t><<<blocks, kPackThreads, 0, stream>>>(base, R, L, xc.stride(0), W, o);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor sign_pack_cuda(const at::Tensor& x) {
  check_sign_pack_input(x, "sign_pack");
  TORCH_CHECK_VALUE(x.is_cuda(), "sign_pack: x is on ", x.device(), ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({x.size(0), sign_words(x.size(1))}, x.options().dtype(at::kLong));
  pack_into(x, out);
  return out;
}

int64_t count_distinct(const at::Tensor& p) {
  const int64_t R = p.size(0), W = p.size(1);
  if (R == 0) return 0;
  if (W == 0) return 1;
  if (W == 1) return std::get<0>(at::_unique2(p.reshape({R}), /*sorted=*/true, false, false)).size(0);
  return std::get<0>(at::unique_dim(p, 0, /*sorted=*/true, false, false)).size(0);
}

at::Tensor distinct_rows_cuda(const at::Tensor& packed) {
  check_distinct_rows_input(packed);
  TORCH_CHECK_VALUE(packed.is_cuda(), "distinct_rows: packed is on ", packed.device(), ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(packed.device());
  return at::scalar_tensor(count_distinct(packed.contiguous()), packed.options());
}

at::Tensor sign_pattern_count_cuda(const at::Tensor& x) {
  check_sign_pack_input(x, "sign_pattern_count");
  TORCH_CHECK_VALUE(x.is_cuda(), "sign_pattern_count: x is on ", x.device(), ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor packed = at::empty({x.size(0), sign_words(x.size(1))}, x.options().dtype(at::kLong));
  pack_into(x, packed);
  return at::scalar_tensor(count_distinct(packed), packed.options());
}

struct SignSumMeta {
  const void* g[kMaxTensors];
  int64_t cols[kMaxTensors];      // M: elements per sample
  int64_t part_off[kMaxTensors];  // global index of the tensor's first partial
  int32_t n[kMaxTensors];         // N: samples
  uint16_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(SignSumMeta) <= 32000, "kernel argument must stay below CUDA's 32764-byte limit");

template <typename scalar_t>
__global__ void __launch_bounds__(kSumThreads)
sign_sum_chunk_kernel(const SignSumMeta meta, long long* __restrict__ partials) {
  using acc_t = at::opmath_type<scalar_t>;
  const int slot = meta.block_tensor[blockIdx.x];
  const int64_t chunk = meta.block_chunk[blockIdx.x];
  const int64_t M = meta.cols[slot];
  const int64_t c0 = chunk * kColChunk, c1 = ::min(M, c0 + kColChunk);
  const int32_t N = meta.n[slot];
  const scalar_t* __restrict__ g = static_cast<const scalar_t*>(meta.g[slot]);
  long long acc = 0;
  for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
    int32_t s = 0;
    for (int32_t i = 0; i < N; ++i) s += sign_of(static_cast<acc_t>(g[static_cast<int64_t>(i) * M + c]));
    acc += s < 0 ? -s : s;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[meta.part_off[slot] + chunk] = acc;
}

__global__ void __launch_bounds__(kSumThreads)
sign_sum_finish_kernel(const FinishMeta meta, const long long* __restrict__ partials,
                       double* __restrict__ out) {
  const int i = blockIdx.x;
  long long acc = 0;
  for (int64_t c = meta.offset[i] + threadIdx.x; c < meta.offset[i + 1]; c += blockDim.x) acc += partials[c];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[meta.first_tensor + i] = static_cast<double>(acc);
}

at::Tensor sign_sum_cuda(at::TensorList grads) {
  check_sign_sum_inputs(grads);
  const int64_t T = static_cast<int64_t>(grads.size());
  TORCH_CHECK_VALUE(T > 0 && grads[0].is_cuda(), "sign_sum: grads[0] must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(grads[0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> keep(T);
  std::vector<int64_t> N(T), M(T), offset(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    keep[t] = grads[t].contiguous();
    N[t] = keep[t].size(0);
    M[t] = N[t] == 0 ? 0 : keep[t].numel() / N[t];
    offset[t + 1] = offset[t] + (M[t] + kColChunk - 1) / kColChunk;
  }
  TORCH_CHECK(offset[T] < std::numeric_limits<int32_t>::max(), "sign_sum: too many elements");
  auto opts = grads[0].options();
  at::Tensor out = at::empty({T}, opts.dtype(at::kDouble));
  at::Tensor partials = at::empty({std::max<int64_t>(offset[T], 1)}, opts.dtype(at::kLong));
  long long* partials_ptr = reinterpret_cast<long long*>(partials.data_ptr<int64_t>());
  // One launch series per gradient dtype (a list may mix them; the usual list has one).
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    std::vector<int64_t> idx, cols;
    for (int64_t t = 0; t < T; ++t) {
      if (keep[t].scalar_type() == dtype) idx.push_back(t), cols.push_back(M[t]);
    }
    if (idx.empty()) continue;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "sign_sum_cuda", [&] {
      SignSumMeta meta;
      plan_list_launches(
          cols, kColChunk, kMaxTensors, kMaxBlocks,
          [&](int slot, int64_t k) {
            const int64_t t = idx[k];
            meta.g[slot] = keep[t].const_data_ptr();
            meta.cols[slot] = M[t];
            meta.part_off[slot] = offset[t];
            meta.n[slot] = static_cast<int32_t>(N[t]);
          },
          [&](int b, int slot, int64_t c) {
            meta.block_tensor[b] = static_cast<uint16_t>(slot);
            meta.block_chunk[b] = static_cast<int32_t>(c);
          },
          [&](int nb, int64_t) {
            sign_sum_chunk_kernel<scalar_t><<<nb, kSumThreads, 0, stream>>>(meta, partials_ptr);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
    });
  }
  FinishMeta fmeta;
  for (int64_t first = 0; first < T; first += kFinishMaxTensors) {
    const int64_t cnt = std::min<int64_t>(kFinishMaxTensors, T - first);
    fmeta.first_tensor = first;
    for (int64_t i = 0; i <= cnt; ++i) fmeta.offset[i] = static_cast<int32_t>(offset[first + i]);
    sign_sum_finish_kernel<<<cnt, kSumThreads, 0, stream>>>(fmeta, partials_ptr, out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("sign_pack", &cuda::sign_pack_cuda);
  m.impl("distinct_rows", &cuda::distinct_rows_cuda);
  m.impl("sign_pattern_count", &cuda::sign_pattern_count_cuda);
  m.impl("sign_sum", &cuda::sign_sum_cuda);
}

}  // namespace zcfast

// Deterministic block-wide sum for zcfast's CUDA kernels.
//
// Note [deterministic reductions]: no atomics anywhere. A block sums with warp shuffles in a
// fixed pattern, then warp 0 sums the per-warp results; partial results of several blocks go to
// distinct slots of a buffer and a later kernel sums them in index order. So the same inputs and
// launch shape always give bit-identical results.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace zcfast {
namespace cuda {

constexpr int kWarp = 32;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Sum of v over the block; the result is valid in thread 0 only. blockDim.x must be a multiple
// of 32 and at most 1024. Safe to call several times in one kernel (it synchronises first).
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[kWarp];
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  __syncthreads();  // a previous call's readers are done with warp_sums
  v = warp_sum(v);
  if (lane == 0) warp_sums[wid] = v;
  __syncthreads();
  if (wid == 0) {
    v = (lane < static_cast<int>(blockDim.x) / kWarp) ? warp_sums[lane] : acc_t(0);
    v = warp_sum(v);
  }
  return v;
}

// Sum of v over the block, returned to every thread.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum_broadcast(acc_t v) {
  __shared__ acc_t result;
  v = block_sum(v);
  if (threadIdx.x == 0) result = v;
  __syncthreads();
  return result;
}

// out[0] = sum_i in[i] for i < n, in index-strided order; launch with one block.
template <typename acc_t>
__global__ void sum_vector_kernel(const acc_t* __restrict__ in, int64_t n, acc_t* __restrict__ out) {
  acc_t v = acc_t(0);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += in[i];
  v = block_sum(v);
  if (threadIdx.x == 0) out[0] = v;
}

}  // namespace cuda
}  // namespace zcfast

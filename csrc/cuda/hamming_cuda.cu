// zcfast::hamming_kernel_ on CUDA: NWOT's kernel matrix (Mellor et al. 2021, "nwot"),
//   out[i, j] += sum_l D_l - popcount(c_li ^ c_lj),   c_li = (acts[l][i] > 0)   (zcfast/modern.h)
// Two kernels: (1) per layer, each warp thresholds 32 consecutive features of one sample and
// packs them with __ballot_sync into one uint32 word of the [N, W] code matrix (all layers side
// by side, each padded to whole words with 0 bits); (2) a grid of N x N blocks, where block (j, i)
// with j >= i (the others return at once) sums
// __popc(c_i ^ c_j) over the W words (integers: exact and deterministic, no atomics) and adds
// D - count to out[i, j] and out[j, i].
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "block_reduce.cuh"
#include "zcfast/checks.h"
#include "zcfast/modern.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kPackThreads = 256;  // 8 words per block
constexpr int kPairThreads = 256;
constexpr int64_t kWordBits = 32;

// Grid (ceil(words_l / 8), N): word w of sample n of one layer.
template <typename scalar_t>
__global__ void __launch_bounds__(kPackThreads)
hamming_pack_kernel(const scalar_t* __restrict__ x, int64_t D, int64_t words, int64_t W,
                    int64_t word_offset, uint32_t* __restrict__ codes) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = blockIdx.y;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * (kPackThreads / kWarp) + threadIdx.x / kWarp;
  if (w >= words) return;  // whole warps leave together (w is uniform in a warp)
  const int64_t f = w * kWordBits + threadIdx.x % kWarp;
  const bool bit = f < D && nwot_bit(static_cast<acc_t>(x[n * D + f]));
  const uint32_t word = __ballot_sync(0xffffffffu, bit);
  if (threadIdx.x % kWarp == 0) codes[n * W + word_offset + w] = word;
}

template <typename out_t>
__global__ void __launch_bounds__(kPairThreads)
hamming_pairs_kernel(const uint32_t* __restrict__ codes, int64_t N, int64_t W, int64_t Dtot,
                     out_t* __restrict__ out) {
  const int64_t i = blockIdx.y, j = blockIdx.x;
  if (j < i) return;  // the whole block: block_sum below is reached by all threads or none
  const uint32_t* a = codes + i * W;
  const uint32_t* b = codes + j * W;
  long long pc = 0;
  for (int64_t w = threadIdx.x; w < W; w += blockDim.x) pc += __popc(a[w] ^ b[w]);
  pc = block_sum(pc);
  if (threadIdx.x == 0) {
    const out_t v = static_cast<out_t>(Dtot - pc);
    out[i * N + j] += v;
    if (i != j) out[j * N + i] += v;
  }
}

void hamming_cuda(at::TensorList acts, const at::Tensor& out) {
  check_hamming_inputs(acts, out);
  TORCH_CHECK_VALUE(out.is_cuda(), "hamming_kernel: out is on ", out.device(), ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(out.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = out.size(0);
  const int64_t L = static_cast<int64_t>(acts.size());
  if (N == 0 || L == 0) return;
  TORCH_CHECK_VALUE(N <= 65535, "hamming_kernel: out has N = ", N, " samples, more than 65535 ",
                    "(one CUDA grid dimension)");
  std::vector<at::Tensor> keep(L);
  std::vector<int64_t> D(L), woff(L + 1, 0);
  int64_t Dtot = 0;
  for (int64_t l = 0; l < L; ++l) {
    keep[l] = acts[l].contiguous();
    D[l] = acts[l].numel() / N;
    woff[l + 1] = woff[l] + (D[l] + kWordBits - 1) / kWordBits;
    Dtot += D[l];
  }
  const int64_t W = woff[L];
  if (W == 0) return;
  at::Tensor codes = at::empty({N * W}, out.options().dtype(at::kInt));
  uint32_t* codes_ptr = reinterpret_cast<uint32_t*>(codes.data_ptr<int32_t>());
  for (int64_t l = 0; l < L; ++l) {
    const int64_t words = woff[l + 1] - woff[l];
    if (words == 0) continue;
    const int64_t per_block = kPackThreads / kWarp;
    const dim3 grid(static_cast<unsigned>((words + per_block - 1) / per_block), static_cast<unsigned>(N));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keep[l].scalar_type(), "hamming_pack_cuda", [&] {
      hamming_pack_kernel<scalar_t><<<grid, kPackThreads, 0, stream>>>(
          keep[l].const_data_ptr<scalar_t>(), D[l], words, W, woff[l], codes_ptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const dim3 pair_grid(static_cast<unsigned>(N), static_cast<unsigned>(N));
  AT_DISPATCH_SWITCH(out.scalar_type(), "hamming_pairs_cuda",
      AT_DISPATCH_CASE(at::kDouble, [&] {
        hamming_pairs_kernel<double><<<pair_grid, kPairThreads, 0, stream>>>(
            codes_ptr, N, W, Dtot, out.data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      })
      AT_DISPATCH_CASE(at::kLong, [&] {
        hamming_pairs_kernel<int64_t><<<pair_grid, kPairThreads, 0, stream>>>(
            codes_ptr, N, W, Dtot, out.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }));
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("hamming_kernel_", &cuda::hamming_cuda);
}

}  // namespace zcfast

// zcfast::hamming_kernel_ on CPU: NWOT's kernel matrix (Mellor et al. 2021, "nwot"), accumulated
// over a list of layers in one call:
//   out[i, j] += sum_l  c_li . c_lj + (1 - c_li) . (1 - c_lj)  =  sum_l D_l - popcount(c_li ^ c_lj)
// with c_li = (acts[l][i] > 0) the binary code of sample i's D_l features in layer l.
//
// Two passes instead of two GEMMs per layer: (1) every (layer, sample) row is thresholded and
// bit-packed into uint64 words, all layers side by side in one [N, W] code matrix (each layer
// padded to whole words with 0 bits, see zcfast/modern.h); (2) one pass over the code matrix
// sums popcount(c_i ^ c_j) for every pair i <= j, tile by tile of words so the N rows of a tile
// stay in cache. Counts are int64 and the result is exact (added to a float64 accumulator it
// stays exact below 2^53). Integer sums do not depend on the thread split: deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include "zcfast/checks.h"
#include "zcfast/cpu_reduce.h"
#include "zcfast/modern.h"

namespace zcfast {
namespace {

constexpr int64_t kBits = 64;
constexpr int64_t kTileWords = 256;              // words per pair-pass tile (2 KB per row)
constexpr int64_t kSerialBelow = int64_t(1) << 16;  // elements (or popcounts) below: one thread

template <typename scalar_t>
C10_ALWAYS_INLINE void pack_row(const scalar_t* C10_RESTRICT x, int64_t D, uint64_t* C10_RESTRICT out) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t i = 0, w = 0;
  for (; i + kBits <= D; i += kBits, ++w) {
    uint64_t word = 0;
    for (int k = 0; k < kBits; ++k) {
      word |= static_cast<uint64_t>(nwot_bit(static_cast<acc_t>(x[i + k]))) << k;
    }
    out[w] = word;
  }
  if (i < D) {
    uint64_t word = 0;
    for (int k = 0; i + k < D; ++k) {
      word |= static_cast<uint64_t>(nwot_bit(static_cast<acc_t>(x[i + k]))) << k;
    }
    out[w] = word;
  }
}

C10_ALWAYS_INLINE int64_t xor_popcount(const uint64_t* C10_RESTRICT a, const uint64_t* C10_RESTRICT b,
                                       int64_t n) {
  int64_t s = 0;
  for (int64_t w = 0; w < n; ++w) s += __builtin_popcountll(a[w] ^ b[w]);
  return s;
}

template <typename scalar_t>
using PackFn = void (*)(const scalar_t*, int64_t, uint64_t*);
using PopFn = int64_t (*)(const uint64_t*, const uint64_t*, int64_t);

template <typename scalar_t>
void pack_row_base(const scalar_t* x, int64_t D, uint64_t* out) { pack_row<scalar_t>(x, D, out); }
int64_t xor_popcount_base(const uint64_t* a, const uint64_t* b, int64_t n) { return xor_popcount(a, b, n); }

#ifdef ZCFAST_X86_DISPATCH
template <typename scalar_t>
__attribute__((target("avx2,fma,f16c,popcnt"))) void pack_row_avx2(const scalar_t* x, int64_t D,
                                                                  uint64_t* out) {
  pack_row<scalar_t>(x, D, out);
}

// float32: 8 lanes compared at once, their sign-free "> 0" mask taken with movemask (same bits as
// the generic loop: feature w * 64 + k is bit k of word w; NaN compares false, _CMP_GT_OQ).
template <>
__attribute__((target("avx2,fma,f16c,popcnt"))) void pack_row_avx2<float>(const float* x, int64_t D,
                                                                          uint64_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0, w = 0;
  for (; i + kBits <= D; i += kBits, ++w) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      const uint64_t m = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ)));
      word |= m << (8 * k);
    }
    out[w] = word;
  }
  if (i < D) {
    uint64_t word = 0;
    for (int k = 0; i + k < D; ++k) word |= static_cast<uint64_t>(nwot_bit(x[i + k])) << k;
    out[w] = word;
  }
}

__attribute__((target("avx2,popcnt"))) int64_t xor_popcount_avx2(const uint64_t* a, const uint64_t* b,
                                                                 int64_t n) {
  return xor_popcount(a, b, n);
}
#endif

template <typename scalar_t>
PackFn<scalar_t> pack_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  if (cpu_isa_level() >= 1) return &pack_row_avx2<scalar_t>;
#endif
  return &pack_row_base<scalar_t>;
}

PopFn popcount_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  if (cpu_isa_level() >= 1) return &xor_popcount_avx2;
#endif
  return &xor_popcount_base;
}

bool run_serial(int64_t work) {
  return work < kSerialBelow || at::get_num_threads() == 1 || at::in_parallel_region();
}

template <typename F>
void maybe_parallel(int64_t n, int64_t work, F&& f) {
  if (n == 0) return;
  if (run_serial(work)) {
    f(0, n);
  } else {
    at::parallel_for(0, n, 1, f);
  }
}

void hamming_cpu(at::TensorList acts, const at::Tensor& out) {
  check_hamming_inputs(acts, out);
  const int64_t N = out.size(0);
  const int64_t L = static_cast<int64_t>(acts.size());
  if (N == 0 || L == 0) return;

  std::vector<at::Tensor> keep(L);
  std::vector<int64_t> D(L), woff(L + 1, 0);
  int64_t Dtot = 0, elems = 0;
  for (int64_t l = 0; l < L; ++l) {
    keep[l] = acts[l].contiguous();
    D[l] = acts[l].numel() / N;
    woff[l + 1] = woff[l] + (D[l] + kBits - 1) / kBits;
    Dtot += D[l];
    elems += acts[l].numel();
  }
  const int64_t W = woff[L];
  if (W == 0) return;
  std::vector<uint64_t> codes(static_cast<size_t>(N * W));

  // (1) pack: one task per (layer, sample) row.
  maybe_parallel(L * N, elems, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t l = r / N, n = r % N;
      uint64_t* dst = codes.data() + n * W + woff[l];
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keep[l].scalar_type(), "hamming_pack", [&] {
        static const PackFn<scalar_t> pack = pack_dispatch<scalar_t>();
        pack(keep[l].const_data_ptr<scalar_t>() + n * D[l], D[l], dst);
      });
    }
  });

  // (2) pairs i <= j, numbered row by row; each task takes a run of pairs and walks the words in
  // tiles, so the rows it touches stay in cache.
  const int64_t P = N * (N + 1) / 2;
  std::vector<int32_t> pi(P), pj(P);
  for (int64_t i = 0, p = 0; i < N; ++i)
    for (int64_t j = i; j < N; ++j, ++p) pi[p] = static_cast<int32_t>(i), pj[p] = static_cast<int32_t>(j);
  std::vector<int64_t> pc(P, 0);
  const PopFn pop = popcount_dispatch();
  const int64_t nthreads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t tasks = run_serial(P * W) ? 1 : std::min<int64_t>(P, 4 * nthreads);
  maybe_parallel(tasks, P * W, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p0 = P * t / tasks, p1 = P * (t + 1) / tasks;
      for (int64_t w0 = 0; w0 < W; w0 += kTileWords) {
        const int64_t nw = std::min(kTileWords, W - w0);
        for (int64_t p = p0; p < p1; ++p) {
          pc[p] += pop(codes.data() + pi[p] * W + w0, codes.data() + pj[p] * W + w0, nw);
        }
      }
    }
  });

  AT_DISPATCH_SWITCH(out.scalar_type(), "hamming_out",
      AT_DISPATCH_CASE(at::kDouble, [&] {
        double* o = out.data_ptr<double>();
        for (int64_t p = 0; p < P; ++p) {
          const double v = static_cast<double>(Dtot - pc[p]);
          o[pi[p] * N + pj[p]] += v;
          if (pi[p] != pj[p]) o[pj[p] * N + pi[p]] += v;
        }
      })
      AT_DISPATCH_CASE(at::kLong, [&] {
        int64_t* o = out.data_ptr<int64_t>();
        for (int64_t p = 0; p < P; ++p) {
          const int64_t v = Dtot - pc[p];
          o[pi[p] * N + pj[p]] += v;
          if (pi[p] != pj[p]) o[pj[p] * N + pi[p]] += v;
        }
      }));
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("hamming_kernel_", &hamming_cpu);
}

}  // namespace zcfast

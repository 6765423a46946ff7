// zcfast::sign_pack, distinct_rows, sign_pattern_count and sign_sum on CPU (issue #13):
//   sign_pack(x [R, L])  -> int64 [R, ceil(L/64)],  bit j of word w of row r = (x[r, 64w + j] > 0)
//   distinct_rows(p [R, W]) -> number of distinct rows (0 for R = 0)
//   sign_pattern_count(x) = distinct_rows(sign_pack(x)), without materialising the packed tensor
//   sign_sum(grads)      -> float64 [T],  out[t] = sum_theta | sum_i sign(g_t[i, theta]) |
// Serve SWAP (Peng et al. 2024: distinct sign patterns of each neuron over the batch, x = the
// activations transposed, [neurons, B]), TE-NAS's linear-region count (Chen et al. 2021: distinct
// patterns of each sample over all neurons, x = [B, neurons]) and GradSign (Zhang & Jia 2022:
// per-sample gradient sign agreement). Math and checks: zcfast/signs.h.
//
// sign_pack reads rows in place when either dimension is contiguous: a row-contiguous x is packed
// row by row; a column-contiguous x (SWAP's transposed activations) is packed 64 columns at a time
// across a block of rows, so every read is sequential. distinct_rows hashes every row (parallel)
// and inserts the rows into a growing open-addressing table (serial, O(R W)). sign_sum accumulates the
// per-element sign sums of a block of columns over the N samples in int16 (16-bit inputs with
// N < 2^15) or int32, then |.| in int64: integers, so exact and independent of the thread split.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include "zcfast/cpu_reduce.h"
#include "zcfast/signs.h"

namespace zcfast {
namespace {

constexpr int64_t kBits = kSignWordBits;
constexpr int64_t kSerialBelow = int64_t(1) << 16;  // elements below: one thread
constexpr int64_t kRowBlock = 512;                   // rows per task of the column-contiguous pack
constexpr int64_t kSumCols = 2048;                   // columns per sign_sum task

template <typename F>
void maybe_parallel(int64_t n, int64_t work, F&& f) {
  if (n <= 0) return;
  if (work < kSerialBelow || at::get_num_threads() == 1 || at::in_parallel_region()) {
    f(int64_t(0), n);
  } else {
    at::parallel_for(0, n, 1, f);
  }
}

// ---- sign_pack ------------------------------------------------------------------------------

template <typename scalar_t>
C10_ALWAYS_INLINE void pack_row(const scalar_t* C10_RESTRICT x, int64_t L, uint64_t* C10_RESTRICT out) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t i = 0, w = 0;
  for (; i + kBits <= L; i += kBits, ++w) {
    uint64_t word = 0;
    for (int k = 0; k < kBits; ++k) word |= static_cast<uint64_t>(sign_bit(static_cast<acc_t>(x[i + k]))) << k;
    out[w] = word;
  }
  if (i < L) {
    uint64_t word = 0;
    for (int k = 0; i + k < L; ++k) word |= static_cast<uint64_t>(sign_bit(static_cast<acc_t>(x[i + k]))) << k;
    out[w] = word;
  }
}

template <typename scalar_t>
using PackRowFn = void (*)(const scalar_t*, int64_t, uint64_t*);

template <typename scalar_t>
void pack_row_base(const scalar_t* x, int64_t L, uint64_t* out) { pack_row<scalar_t>(x, L, out); }

#ifdef ZCFAST_X86_DISPATCH
template <typename scalar_t>
__attribute__((target("avx2,fma,f16c"))) void pack_row_avx2(const scalar_t* x, int64_t L, uint64_t* out) {
  pack_row<scalar_t>(x, L, out);
}

// float32: 8 lanes compared with _CMP_GT_OQ (NaN false) and their mask taken with movemask.
template <>
__attribute__((target("avx2,fma,f16c"))) void pack_row_avx2<float>(const float* x, int64_t L, uint64_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0, w = 0;
  for (; i + kBits <= L; i += kBits, ++w) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      word |= static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ))))
              << (8 * k);
    }
    out[w] = word;
  }
  if (i < L) {
    uint64_t word = 0;
    for (int k = 0; i + k < L; ++k) word |= static_cast<uint64_t>(sign_bit(x[i + k])) << k;
    out[w] = word;
  }
}
#endif

template <typename scalar_t>
PackRowFn<scalar_t> pack_row_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  if (cpu_isa_level() >= 1) return &pack_row_avx2<scalar_t>;
#endif
  return &pack_row_base<scalar_t>;
}

// Column-contiguous block: rows [r0, r1) of x with x[r, l] at x[r + l * ld]; writes words
// [w0, w1) of those rows into out (row stride W).
template <typename scalar_t>
void pack_cols_block(const scalar_t* C10_RESTRICT x, int64_t ld, int64_t L, int64_t r0, int64_t r1,
                     int64_t w0, int64_t w1, int64_t W, uint64_t* C10_RESTRICT out) {
  using acc_t = at::opmath_type<scalar_t>;
  uint64_t word[kRowBlock];
  const int64_t n = r1 - r0;
  for (int64_t w = w0; w < w1; ++w) {
    std::fill(word, word + n, uint64_t(0));
    const int64_t l0 = w * kBits, l1 = std::min(L, l0 + kBits);
    for (int64_t l = l0; l < l1; ++l) {
      const scalar_t* col = x + l * ld + r0;
      const int sh = static_cast<int>(l - l0);
      for (int64_t r = 0; r < n; ++r) word[r] |= static_cast<uint64_t>(sign_bit(static_cast<acc_t>(col[r]))) << sh;
    }
    for (int64_t r = 0; r < n; ++r) out[(r0 + r) * W + w] = word[r];
  }
}

// Packs x [R, L] (any strides) into out [R, W] words (row-major, W = ceil(L / 64)).
void pack_into(const at::Tensor& x, uint64_t* out) {
  const int64_t R = x.size(0), L = x.size(1), W = sign_words(L);
  if (R == 0 || W == 0) return;
  const bool col_major = x.stride(0) == 1 && x.stride(1) != 1 && R > 1;
  const at::Tensor xc = col_major || x.stride(1) == 1 || L == 1 ? x : x.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "sign_pack_cpu", [&] {
    const scalar_t* base = xc.const_data_ptr<scalar_t>();
    if (col_major) {
      const int64_t ld = xc.stride(1);
      const int64_t rblocks = (R + kRowBlock - 1) / kRowBlock;
      // Tasks: (row block, word); each writes its own words.
      maybe_parallel(rblocks * W, R * L, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
          const int64_t rb = t / W, w = t % W;
          pack_cols_block<scalar_t>(base, ld, L, rb * kRowBlock, std::min(R, (rb + 1) * kRowBlock), w,
                                    w + 1, W, out);
        }
      });
    } else {
      const int64_t ld = xc.stride(0);
      static const PackRowFn<scalar_t> pack = pack_row_dispatch<scalar_t>();
      maybe_parallel(R, R * L, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) pack(base + r * ld, L, out + r * W);
      });
    }
  });
}

at::Tensor sign_pack_cpu(const at::Tensor& x) {
  check_sign_pack_input(x, "sign_pack");
  const int64_t R = x.size(0), W = sign_words(x.size(1));
  at::Tensor out = at::empty({R, W}, x.options().dtype(at::kLong));
  pack_into(x, reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()));
  return out;
}

// ---- distinct_rows --------------------------------------------------------------------------

C10_ALWAYS_INLINE uint64_t mix64(uint64_t h) {  // splitmix64's finaliser
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

// Distinct rows of a row-major [R, W] word matrix. The open-addressing table holds (hash, row)
// pairs and starts small, growing 4x whenever it is half full: SWAP's ~10^6 neuron rows have only
// ~10^4 distinct patterns, so the table stays in cache (a table sized for R rows was 16 MB of
// random accesses). The count does not depend on the insertion order or the table's size.
struct DistinctSlot {
  uint64_t hash;
  int64_t row;  // -1: empty
};

int64_t count_distinct(const uint64_t* p, int64_t R, int64_t W) {
  if (R == 0) return 0;
  if (W == 0) return 1;
  std::vector<uint64_t> hash(static_cast<size_t>(R));
  maybe_parallel(R, R * W, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      uint64_t h = 0x9e3779b97f4a7c15ULL;
      for (int64_t w = 0; w < W; ++w) h = mix64(h ^ p[r * W + w]) + static_cast<uint64_t>(w);
      hash[r] = h;
    }
  });
  int64_t cap = 1024;
  while (cap < 2 * R && cap < 4096) cap <<= 1;
  std::vector<DistinctSlot> table(static_cast<size_t>(cap), DistinctSlot{0, -1});
  uint64_t mask = static_cast<uint64_t>(cap - 1);
  int64_t distinct = 0;
  const size_t row_bytes = static_cast<size_t>(W) * sizeof(uint64_t);
  for (int64_t r = 0; r < R; ++r) {
    const uint64_t h = hash[r];
    uint64_t s = h & mask;
    const uint64_t* row = p + r * W;
    while (true) {
      const DistinctSlot e = table[s];
      if (e.row < 0) {
        table[s] = DistinctSlot{h, r};
        ++distinct;
        if (2 * distinct > cap) {  // half full: 4x larger, the distinct rows re-inserted (no compares)
          std::vector<DistinctSlot> grown(static_cast<size_t>(cap) * 4, DistinctSlot{0, -1});
          const uint64_t gmask = static_cast<uint64_t>(cap) * 4 - 1;
          for (const DistinctSlot& o : table) {
            if (o.row < 0) continue;
            uint64_t t = o.hash & gmask;
            while (grown[t].row >= 0) t = (t + 1) & gmask;
            grown[t] = o;
          }
          table.swap(grown);
          cap *= 4;
          mask = gmask;
        }
        break;
      }
      if (e.hash == h && std::memcmp(p + e.row * W, row, row_bytes) == 0) break;
      s = (s + 1) & mask;
    }
  }
  return distinct;
}

at::Tensor distinct_rows_cpu(const at::Tensor& packed) {
  check_distinct_rows_input(packed);
  const at::Tensor p = packed.contiguous();
  const int64_t n = count_distinct(reinterpret_cast<const uint64_t*>(p.const_data_ptr<int64_t>()),
                                   p.size(0), p.size(1));
  return at::scalar_tensor(n, packed.options().dtype(at::kLong));
}

at::Tensor sign_pattern_count_cpu(const at::Tensor& x) {
  check_sign_pack_input(x, "sign_pattern_count");
  const int64_t R = x.size(0), W = sign_words(x.size(1));
  std::vector<uint64_t> words(static_cast<size_t>(R * W));
  pack_into(x, words.data());
  return at::scalar_tensor(count_distinct(words.data(), R, W), x.options().dtype(at::kLong));
}

// ---- sign_sum -------------------------------------------------------------------------------

// sign(x) of one element as an int; 16-bit floats straight from their bits (integer lanes, no
// conversion): IEEE half has inf at 0x7c00, bfloat16 at 0x7f80; magnitudes above are NaN (0),
// magnitude 0 is +-0 (0).
template <typename scalar_t>
struct SignOf {
  using in_t = scalar_t;
  static C10_ALWAYS_INLINE int of(in_t v) { return sign_of(static_cast<at::opmath_type<scalar_t>>(v)); }
};
template <uint16_t kInf>
struct SignOf16 {
  using in_t = uint16_t;
  static C10_ALWAYS_INLINE int of(uint16_t u) {
    const uint16_t mag = u & 0x7fff;
    const int valid = static_cast<uint16_t>(mag - 1) < kInf;  // 1 <= mag <= inf
    return valid * (1 - 2 * static_cast<int>(u >> 15));
  }
};
template <>
struct SignOf<at::Half> : SignOf16<0x7c00> {};
template <>
struct SignOf<at::BFloat16> : SignOf16<0x7f80> {};

// sum_j | sum_i sign(g[i, c0 + j]) | over the columns [c0, c1) of a row-major [N, M] matrix; four
// rows per pass over the counters.
template <typename scalar_t, typename count_t>
int64_t sign_sum_block(const scalar_t* g_, int64_t N, int64_t M, int64_t c0, int64_t c1) {
  using S = SignOf<scalar_t>;
  using in_t = typename S::in_t;
  const in_t* C10_RESTRICT g = reinterpret_cast<const in_t*>(g_);
  count_t cnt[kSumCols];
  const int64_t n = c1 - c0;
  std::fill(cnt, cnt + n, count_t(0));
  int64_t i = 0;
  for (; i + 4 <= N; i += 4) {
    const in_t* C10_RESTRICT r0 = g + i * M + c0;
    const in_t* C10_RESTRICT r1 = r0 + M;
    const in_t* C10_RESTRICT r2 = r1 + M;
    const in_t* C10_RESTRICT r3 = r2 + M;
    for (int64_t j = 0; j < n; ++j) {
      cnt[j] = static_cast<count_t>(cnt[j] + S::of(r0[j]) + S::of(r1[j]) + S::of(r2[j]) + S::of(r3[j]));
    }
  }
  for (; i < N; ++i) {
    const in_t* C10_RESTRICT row = g + i * M + c0;
    for (int64_t j = 0; j < n; ++j) cnt[j] = static_cast<count_t>(cnt[j] + S::of(row[j]));
  }
  int64_t s = 0;
  for (int64_t j = 0; j < n; ++j) s += cnt[j] < 0 ? -static_cast<int64_t>(cnt[j]) : static_cast<int64_t>(cnt[j]);
  return s;
}

at::Tensor sign_sum_cpu(at::TensorList grads) {
  check_sign_sum_inputs(grads);
  const int64_t T = static_cast<int64_t>(grads.size());
  std::vector<at::Tensor> keep(T);
  std::vector<int64_t> N(T), M(T), first(T + 1, 0);
  int64_t elems = 0;
  for (int64_t t = 0; t < T; ++t) {
    keep[t] = grads[t].contiguous();
    N[t] = keep[t].size(0);
    M[t] = N[t] == 0 ? 0 : keep[t].numel() / N[t];
    first[t + 1] = first[t] + (N[t] == 0 ? 0 : (M[t] + kSumCols - 1) / kSumCols);
    elems += keep[t].numel();
  }
  const int64_t tasks = first[T];
  std::vector<int64_t> part(static_cast<size_t>(tasks), 0);
  std::vector<int64_t> owner(static_cast<size_t>(tasks));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = first[t]; k < first[t + 1]; ++k) owner[k] = t;
  maybe_parallel(tasks, elems, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t t = owner[k];
      const int64_t c0 = (k - first[t]) * kSumCols, c1 = std::min(M[t], c0 + kSumCols);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keep[t].scalar_type(), "sign_sum_cpu", [&] {
        const scalar_t* g = keep[t].const_data_ptr<scalar_t>();
        // int16 counters where they are exact (N < 2^15) and as wide as the input's lanes
        // (16-bit floats); int32 otherwise (float32/float64 compare masks widen for free).
        part[k] = sizeof(scalar_t) == 2 && N[t] < (int64_t(1) << 15)
                      ? sign_sum_block<scalar_t, int16_t>(g, N[t], M[t], c0, c1)
                      : sign_sum_block<scalar_t, int32_t>(g, N[t], M[t], c0, c1);
      });
    }
  });
  at::Tensor out = at::empty({T}, grads[0].options().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  for (int64_t t = 0; t < T; ++t) {
    int64_t s = 0;
    for (int64_t k = first[t]; k < first[t + 1]; ++k) s += part[k];
    o[t] = static_cast<double>(s);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("sign_pack", &sign_pack_cpu);
  m.impl("distinct_rows", &distinct_rows_cpu);
  m.impl("sign_pattern_count", &sign_pattern_count_cpu);
  m.impl("sign_sum", &sign_sum_cpu);
}

}  // namespace zcfast

// CPU inner loop shared by the saliency and Fisher kernels: the sum of saliency_term over one
// contiguous run of elements.
//
// Note [lane accumulators]: the loop keeps kLanes independent accumulators, so the compiler can
// keep them in SIMD registers (a float reduction into one scalar cannot be vectorised without
// -ffast-math, because that would reorder the additions). The lanes are combined in a fixed
// order, so the result depends only on the data and the run's length, never on threads.
//
// Note [ISA dispatch]: cpu_run_sum is always inlined into three copies built for AVX-512, AVX2 and
// the baseline ISA (cpu_run_sum_dispatch picks one at run time). The lane structure is fixed in
// the source and the build uses -ffp-contract=off, so every copy adds the same numbers in the same
// order: results are bit-identical whichever copy runs.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstdlib>

#include "zcfast/reduce_kind.h"

namespace zcfast {

template <typename acc_t>
struct CpuLanes {
  // 64 bytes of accumulators: 16 floats or 8 doubles, i.e. four SSE / two AVX registers.
  static constexpr int kLanes = 64 / sizeof(acc_t);
};

template <SaliencyKind K, typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE acc_t cpu_run_sum(const scalar_t* C10_RESTRICT p, const scalar_t* C10_RESTRICT g, int64_t n) {
  constexpr int L = CpuLanes<acc_t>::kLanes;
  acc_t lane[L];
  for (int j = 0; j < L; ++j) lane[j] = acc_t(0);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    for (int j = 0; j < L; ++j) {
      const acc_t pv = kind_reads_params(K) ? static_cast<acc_t>(p[i + j]) : acc_t(0);
      const acc_t gv = kind_reads_grads(K) ? static_cast<acc_t>(g[i + j]) : acc_t(0);
      lane[j] += saliency_term<K, acc_t>(pv, gv);
    }
  }
  for (int j = 0; i < n; ++i, ++j) {
    const acc_t pv = kind_reads_params(K) ? static_cast<acc_t>(p[i]) : acc_t(0);
    const acc_t gv = kind_reads_grads(K) ? static_cast<acc_t>(g[i]) : acc_t(0);
    lane[j] += saliency_term<K, acc_t>(pv, gv);
  }
  // Pairwise combine in a fixed order.
  for (int w = L / 2; w > 0; w /= 2) {
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  }
  return lane[0];
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define ZCFAST_X86_DISPATCH 1
#endif

template <SaliencyKind K, typename scalar_t, typename acc_t>
using RunSumFn = acc_t (*)(const scalar_t*, const scalar_t*, int64_t);

template <SaliencyKind K, typename scalar_t, typename acc_t>
acc_t cpu_run_sum_base(const scalar_t* p, const scalar_t* g, int64_t n) {
  return cpu_run_sum<K, scalar_t, acc_t>(p, g, n);
}

#ifdef ZCFAST_X86_DISPATCH
template <SaliencyKind K, typename scalar_t, typename acc_t>
__attribute__((target("avx2,fma,f16c"))) acc_t cpu_run_sum_avx2(const scalar_t* p, const scalar_t* g,
                                                                   int64_t n) {
  return cpu_run_sum<K, scalar_t, acc_t>(p, g, n);
}

template <SaliencyKind K, typename scalar_t, typename acc_t>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) acc_t cpu_run_sum_avx512(
    const scalar_t* p, const scalar_t* g, int64_t n) {
  return cpu_run_sum<K, scalar_t, acc_t>(p, g, n);
}

inline int cpu_isa_level() {  // 2: AVX-512, 1: AVX2, 0: baseline; ZCFAST_CPU_ISA=0/1/2 caps it
  static const int level = [] {
    __builtin_cpu_init();
    int l = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) l = 1;
    if (l == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      l = 2;
    if (const char* cap = std::getenv("ZCFAST_CPU_ISA")) {
      const int c = std::atoi(cap);
      if (c >= 0 && c < l) l = c;
    }
    return l;
  }();
  return level;
}
#else
inline int cpu_isa_level() { return 0; }
#endif

// The widest copy of cpu_run_sum this CPU runs (see Note [ISA dispatch]).
template <SaliencyKind K, typename scalar_t, typename acc_t>
RunSumFn<K, scalar_t, acc_t> cpu_run_sum_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  switch (cpu_isa_level()) {
    case 2: return &cpu_run_sum_avx512<K, scalar_t, acc_t>;
    case 1: return &cpu_run_sum_avx2<K, scalar_t, acc_t>;
    default: break;
  }
#endif
  return &cpu_run_sum_base<K, scalar_t, acc_t>;
}

}  // namespace zcfast

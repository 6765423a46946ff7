// CPU inner loop shared by the saliency and Fisher kernels: the sum of saliency_term over one
// contiguous run of elements.
//
// Note [lane accumulators]: the loop keeps kLanes independent accumulators, so the compiler can
// keep them in SIMD registers (a float reduction into one scalar cannot be vectorised without
// -ffast-math, because that would reorder the additions). The lanes are combined in a fixed
// order, so the result depends only on the data and the run's length, never on threads.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "zcfast/reduce_kind.h"

namespace zcfast {

template <typename acc_t>
struct CpuLanes {
  // 64 bytes of accumulators: 16 floats or 8 doubles, i.e. four SSE / two AVX registers.
  static constexpr int kLanes = 64 / sizeof(acc_t);
};

template <SaliencyKind K, typename scalar_t, typename acc_t>
inline acc_t cpu_run_sum(const scalar_t* C10_RESTRICT p, const scalar_t* C10_RESTRICT g, int64_t n) {
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

}  // namespace zcfast

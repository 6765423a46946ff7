// Element-wise math of the NWOT and ZiCo kernels, shared by the CPU and CUDA implementations.
//
//   hamming_kernel (NWOT, Mellor et al. 2021, v2): for binary codes c = (a > 0) of one layer's
//     activations, K_ij += c_i.c_j + (1 - c_i).(1 - c_j) = D - popcount(c_i XOR c_j), D the
//     layer's features per sample. Codes are packed into words (bit k of word w of a sample's row
//     is feature w * bits + k); a layer's last word is padded with 0 bits in every row, which XOR
//     to 0 and so count nothing. Counts are integers (int64): exact.
//   moments_update (ZiCo, Li et al. 2023): per gradient element, the running mean of |g|, the
//     running mean of g and M2 = sum (g - mean)^2 over the mini-batches seen (Welford's update,
//     float64). zico_reduce: per tensor, sum over elements of mean|g| / std(g), std with ddof 0
//     (= sqrt(M2 / n)); elements with std == 0 are dropped (numpy's nonzero(std) in the official
//     code); a NaN std is kept (NaN is nonzero), so the sum becomes NaN as there.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace zcfast {

// Threshold of a NWOT code bit: NaN is not > 0, as torch's (a > 0).
template <typename acc_t>
C10_HOST_DEVICE inline bool nwot_bit(acc_t a) {
  return a > acc_t(0);
}

// One Welford step with the n-th sample g (n >= 1): running mean|g|, mean and M2.
C10_HOST_DEVICE inline void welford_step(double g, double n, double& mean_abs, double& mean,
                                         double& m2) {
  const double a = g < 0.0 ? -g : g;
  mean_abs += (a - mean_abs) / n;
  const double d = g - mean;
  mean += d / n;
  m2 += d * (g - mean);
}

// The first step (n = 1) from an all-zero state, without reading the state: a fresh state's
// contents are never read (moments_update with count 0 overwrites them), so it can be allocated
// uninitialised or reused without zeroing. Bit-identical to welford_step from zeros.
C10_HOST_DEVICE inline void welford_first(double g, double& mean_abs, double& mean, double& m2) {
  double a = 0.0, m = 0.0, v = 0.0;
  welford_step(g, 1.0, a, m, v);
  mean_abs = a;
  mean = m;
  m2 = v;
}

// An element's ZiCo term: mean|g| / std(g) (ddof 0) over n batches, or 0 when std == 0.
C10_HOST_DEVICE inline double zico_term(double mean_abs, double m2, double n) {
  if (m2 == 0.0) return 0.0;
  return mean_abs / ::sqrt(m2 / n);
}

}  // namespace zcfast

// zcfast::channel_spectra, device-independent part (used by the CPU and CUDA kernels): the Gram
// matrices of the scaled rows and their batched symmetric eigenvalues. MeCo (Jiang et al. 2023)
// sums the smallest eigenvalue of each layer's channel correlation matrix; AZ-NAS (Lee & Ham
// 2024) takes the spectrum of a channel covariance for its expressivity score. See
// zcfast/signs.h for the scaling of the rows (corr vs cov, degenerate rows).
#include <ATen/core/Tensor.h>
#include <ATen/ops/any.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/linalg_eigvalsh.h>
#include <ATen/ops/logical_not.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <limits>
#include <vector>

#include "zcfast/signs.h"

namespace zcfast {

std::vector<at::Tensor> channel_spectra_finish(const at::Tensor& z, const std::vector<int64_t>& C,
                                               const std::vector<int64_t>& P,
                                               const std::vector<int64_t>& zoff,
                                               const std::vector<int64_t>& order) {
  const int64_t T = static_cast<int64_t>(C.size());
  std::vector<at::Tensor> out(T);
  const auto opts = z.options();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t k = 0; k < T;) {
    const int64_t c = C[order[k]];
    int64_t e = k;
    while (e < T && C[order[e]] == c) ++e;
    const int64_t B = e - k;
    at::Tensor gram = at::empty({B, c, c}, opts);
    for (int64_t s = k; s < e;) {  // runs of equal P: one bmm each, straight from the buffer
      const int64_t p = P[order[s]];
      int64_t u = s;
      while (u < e && P[order[u]] == p) ++u;
      at::Tensor g = gram.narrow(0, s - k, u - s);
      if (c > 0 && p == 0) {
        g.zero_();
      } else if (c > 0) {
        at::Tensor zs = z.narrow(0, zoff[order[s]], (u - s) * c * p).view({u - s, c, p});
        at::bmm_out(g, zs, zs.transpose(1, 2));
      }
      s = u;
    }
    at::Tensor eig;
    if (c == 0) {
      eig = at::empty({B, 0}, opts);
    } else {
      at::Tensor bad = at::any(at::logical_not(at::isfinite(gram)).reshape({B, c * c}), 1);  // [B]
      at::Tensor safe = at::where(bad.view({B, 1, 1}), at::zeros({}, opts), gram);
      eig = at::linalg_eigvalsh(safe);  // [B, c], ascending
      eig = at::where(bad.view({B, 1}), at::full({}, nan, opts), eig);
    }
    for (int64_t i = 0; i < B; ++i) out[order[k + i]] = eig.select(0, i).clone();
    k = e;
  }
  return out;
}

}  // namespace zcfast

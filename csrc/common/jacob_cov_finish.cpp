// zcfast::jacob_cov_score, device-independent part (used by the CPU and CUDA kernels).
//
// The jacob_cov proxy (Mellor et al. 2021, as scored by the zero-cost paper): for each model m,
// with J_m the [N, D] Jacobian of the summed output w.r.t. N input samples,
//   corr_m = corrcoef(J_m)              (N x N, numpy semantics, clipped to [-1, 1])
//   lambda = eigenvalues(corr_m)        (symmetric solver, ascending)
//   score  = -sum_i [ log(lambda_i + k) + 1 / (lambda_i + k) ]
//
// Note [jacob_cov precision]: the official code computes corrcoef in float64 (numpy promotes),
// and the score is dominated by the smallest eigenvalues (1/(lambda+k) with k = 1e-5), so a
// float32 correlation matrix would move scores a lot. Everything here runs in float64 whatever
// the input dtype; only the returned tensors take the contract's dtype.
//
// Note [jacob_cov degenerate rows]: numpy's corrcoef divides by a zero standard deviation and
// yields NaN rows; the official eigen-solver then raises and the score becomes NaN. Here a model
// whose correlation matrix has any non-finite entry gets score NaN and all-NaN eigenvalues; its
// matrix is swapped for the identity before the batched solve so the other models are unaffected.
// Fewer than 2 samples or no features: every model NaN (Note [jacob_cov undefined sizes]).
#include <ATen/core/Tensor.h>
#include <ATen/ops/any.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/linalg_eigvalsh.h>
#include <ATen/ops/log.h>
#include <ATen/ops/logical_not.h>
#include <ATen/ops/reciprocal.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>
#include <ATen/ops/add.h>
#include <ATen/ops/full.h>
#include <ATen/ops/neg.h>
#include <ATen/ops/ones.h>

#include <limits>

#include "zcfast/jacob_cov.h"

namespace zcfast {

std::tuple<at::Tensor, at::Tensor> jacob_cov_finish(const at::Tensor& z, double k,
                                                    at::ScalarType out_dtype) {
  const int64_t M = z.size(0), N = z.size(1), D = z.size(2);
  at::Tensor corr = at::clamp(at::bmm(z, z.transpose(1, 2)), -1.0, 1.0);  // NaN stays NaN
  at::Tensor bad = at::any(at::logical_not(at::isfinite(corr)).reshape({M, N * N}), 1);  // [M]
  // Note [jacob_cov undefined sizes]: with N < 2 samples there is no correlation to speak of
  // (numpy's corrcoef of one row is the 1x1 matrix [1], which would score a meaningless
  // -(log(1+k) + 1/(1+k)) = -1.00000000005), and with D = 0 features every row has zero
  // variance (bmm over an empty dimension gives 0, not NaN): both are undefined, so NaN.
  if (N < 2 || D == 0) bad = at::ones({M}, z.options().dtype(at::kBool));
  at::Tensor eye = at::eye(N, z.options());
  at::Tensor safe = at::where(bad.view({M, 1, 1}), eye, corr);
  at::Tensor eig = at::linalg_eigvalsh(safe);  // [M, N], ascending
  at::Tensor x = at::add(eig, k);
  at::Tensor score = at::neg(at::sum(at::add(at::log(x), at::reciprocal(x)), {1}));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor nan_t = at::full({}, nan, z.options());
  score = at::where(bad, nan_t, score);
  eig = at::where(bad.view({M, 1}), nan_t, eig);
  return {score.to(out_dtype), eig.to(out_dtype)};
}

}  // namespace zcfast

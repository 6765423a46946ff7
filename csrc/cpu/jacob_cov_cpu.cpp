// zcfast::jacob_cov_score on CPU. jacobians [M, N, D] -> (scores [M], eigenvalues [M, N]).
// This file does the fused pass over the Jacobians (per-row mean and norm in float64, writing
// the centred, unit-norm rows); jacob_cov_finish (csrc/common) forms corr = Z Z^T, solves the
// symmetric eigenproblem and scores. See the Notes there for precision and degenerate rows.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "zcfast/checks.h"
#include "zcfast/cpu_reduce.h"
#include "zcfast/jacob_cov.h"

namespace zcfast {
namespace {

template <typename scalar_t>
void normalise_rows_cpu(const at::Tensor& jac, at::Tensor& z) {
  const int64_t rows = jac.size(0) * jac.size(1), D = jac.size(2);
  const scalar_t* x = jac.const_data_ptr<scalar_t>();
  double* out = z.data_ptr<double>();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(D, 1));
  at::parallel_for(0, rows, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const scalar_t* xr = x + r * D;
      double* zr = out + r * D;
      for (int64_t i = 0; i < D; ++i) zr[i] = static_cast<double>(xr[i]);
      double s = 0.0;
      {  // row sum with the lane pattern of cpu_run_sum (Note [lane accumulators])
        constexpr int L = CpuLanes<double>::kLanes;
        double lane[L] = {};
        int64_t i = 0;
        for (; i + L <= D; i += L)
          for (int j = 0; j < L; ++j) lane[j] += zr[i + j];
        for (int j = 0; i < D; ++i, ++j) lane[j] += zr[i];
        for (int w = L / 2; w > 0; w /= 2)
          for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
        s = lane[0];
      }
      const double mu = D > 0 ? s / static_cast<double>(D) : 0.0;
      for (int64_t i = 0; i < D; ++i) zr[i] -= mu;
      const double ss = cpu_run_sum<SaliencyKind::ParamSq, double, double>(zr, zr, D);
      if (ss > 0.0 && std::isfinite(ss)) {
        const double inv = 1.0 / std::sqrt(ss);
        for (int64_t i = 0; i < D; ++i) zr[i] *= inv;
      } else {
        std::fill(zr, zr + D, std::numeric_limits<double>::quiet_NaN());
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> jacob_cov_cpu(const at::Tensor& jacobians, double k) {
  check_jacob_cov_inputs(jacobians, k);
  const at::Tensor jac = jacobians.contiguous();
  at::Tensor z = at::empty(jac.sizes(), jac.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, jac.scalar_type(), "jacob_cov_cpu",
                                  [&] { normalise_rows_cpu<scalar_t>(jac, z); });
  return jacob_cov_finish(z, k, acc_dtype_for(jac.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("jacob_cov_score", &jacob_cov_cpu);
}

}  // namespace zcfast

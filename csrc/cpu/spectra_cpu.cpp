// zcfast::channel_spectra on CPU: for T features F_t [C_t, P_t] (channels x observations),
//   kind "corr": eigvalsh(nan_to_num(corrcoef(F_t)))          (MeCo, Jiang et al. 2023)
//   kind "cov":  eigvalsh((F_t - mean)(F_t - mean)^T / (P_t - 1))   (AZ-NAS expressivity)
// ascending, float64, all T in one call. This file does the fused pass over the features: every
// row of every feature (one parallel_for over all of them) is read once, centred in float64 and
// scaled (zcfast/signs.h) into one shared buffer, laid out by (C, P) so that equal shapes are
// adjacent; channel_spectra_finish (csrc/common) then forms Z Z^T with one bmm per run of equal
// (C, P) and solves each run of equal C in one batched eigvalsh.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "zcfast/signs.h"

namespace zcfast {
namespace {

template <typename scalar_t>
void scale_row(const scalar_t* x, int64_t P, int kind, double* z) {
  double s = 0.0;
  for (int64_t i = 0; i < P; ++i) {
    z[i] = static_cast<double>(x[i]);
    s += z[i];
  }
  const double mean = P > 0 ? s / static_cast<double>(P) : 0.0;
  double ss = 0.0;
  for (int64_t i = 0; i < P; ++i) {
    z[i] -= mean;
    ss += z[i] * z[i];
  }
  double scale;
  if (kind == 0) {
    scale = ss > 0.0 && std::isfinite(ss) ? 1.0 / std::sqrt(ss) : 0.0;  // degenerate row -> 0
    if (scale == 0.0) {
      std::fill(z, z + P, 0.0);
      return;
    }
  } else {
    scale = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(P - 1, 1)));
  }
  for (int64_t i = 0; i < P; ++i) z[i] *= scale;
}

std::vector<at::Tensor> channel_spectra_cpu(at::TensorList feats, c10::string_view kind_name) {
  const int kind = check_channel_spectra_inputs(feats, std::string_view(kind_name.data(), kind_name.size()));
  const int64_t T = static_cast<int64_t>(feats.size());
  if (T == 0) return {};
  std::vector<int64_t> C, P, zoff, order;
  int64_t total = 0;
  spectra_layout(feats, C, P, zoff, order, total);
  std::vector<at::Tensor> keep(T);
  std::vector<int64_t> row0(T + 1, 0);  // global row numbering, in input order
  for (int64_t t = 0; t < T; ++t) {
    keep[t] = feats[t].contiguous();
    row0[t + 1] = row0[t] + C[t];
  }
  at::Tensor z = at::empty({total}, feats[0].options().dtype(at::kDouble));
  double* zp = z.data_ptr<double>();
  const int64_t rows = row0[T];
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, total / std::max<int64_t>(rows, 1)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats[0].scalar_type(), "channel_spectra_cpu", [&] {
    at::parallel_for(0, rows, grain, [&](int64_t lo, int64_t hi) {
      int64_t t = std::upper_bound(row0.begin(), row0.end(), lo) - row0.begin() - 1;
      for (int64_t r = lo; r < hi; ++r) {
        while (r >= row0[t + 1]) ++t;
        const int64_t c = r - row0[t];
        scale_row<scalar_t>(keep[t].const_data_ptr<scalar_t>() + c * P[t], P[t], kind, zp + zoff[t] + c * P[t]);
      }
    });
  });
  return channel_spectra_finish(z, C, P, zoff, order);
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("channel_spectra", &channel_spectra_cpu);
}

}  // namespace zcfast

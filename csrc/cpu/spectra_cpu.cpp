// zcfast::channel_spectra on CPU: for T features F_t [C_t, P_t] (channels x observations),
//   kind "corr": eigvalsh(nan_to_num(corrcoef(F_t)))          (MeCo, Jiang et al. 2023)
//   kind "cov":  eigvalsh((F_t - mean)(F_t - mean)^T / (P_t - 1))   (AZ-NAS expressivity)
// ascending, float64, all T in one call. This file does the fused pass over the features: every
// row (one parallel_for over the rows of a segment of features) is centred in float64 and scaled
// (zcfast/signs.h) into a shared buffer, laid out by (C, P) so that equal shapes are adjacent;
// channel_spectra_finish (csrc/common) then forms Z Z^T with one bmm per run of equal (C, P) and
// solves each run of equal C in one batched eigvalsh.
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

// The row sums use kLanes independent partial sums (combined in a fixed order, so the result is
// deterministic): a single running sum is a loop-carried dependency the compiler may not
// reorder, which kept these loops scalar and made the kernel slower than its plain-PyTorch
// reference on AZ-NAS's long rows (16-64 channels x 65,536 positions).
constexpr int64_t kLanes = 8;

inline double lane_total(const double* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// A row is read twice and its float64 copy written once (cov) or twice (corr): the first pass only
// sums the input, the second writes the centred values (already scaled for cov, whose scale is a
// constant) and sums their squares; only corr, whose scale needs that sum, rescales the copy.
// AZ-NAS's rows (65,536 positions, 512 KB in float64) do not stay in cache between passes, so
// each pass over the copy is memory traffic.
template <typename scalar_t>
void scale_row(const scalar_t* x, int64_t P, int kind, double* z) {
  double acc[kLanes] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  const int64_t body = P - P % kLanes;
  for (int64_t i = 0; i < body; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(x[i + j]);
  }
  for (int64_t i = body; i < P; ++i) acc[i - body] += static_cast<double>(x[i]);
  const double mean = P > 0 ? lane_total(acc) / static_cast<double>(P) : 0.0;
  // cov: (x - mean) * 1/sqrt(P - 1) in this pass (the same two roundings as centring, then scaling)
  const double pre = kind == 0 ? 1.0 : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(P - 1, 1)));
  std::fill(acc, acc + kLanes, 0.0);
  for (int64_t i = 0; i < body; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const double d = static_cast<double>(x[i + j]) - mean;
      acc[j] += d * d;
      z[i + j] = d * pre;
    }
  }
  for (int64_t i = body; i < P; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    acc[i - body] += d * d;
    z[i] = d * pre;
  }
  if (kind != 0) return;
  const double ss = lane_total(acc);
  const double scale = ss > 0.0 && std::isfinite(ss) ? 1.0 / std::sqrt(ss) : 0.0;  // degenerate row -> 0
  if (scale == 0.0) {
    std::fill(z, z + P, 0.0);
    return;
  }
  for (int64_t i = 0; i < P; ++i) z[i] *= scale;
}

// The float64 rows are written into a scratch buffer of at most kSegment doubles (16 MB), reused
// for consecutive segments of the (C, P)-sorted features, each finished (Gram matrices, eigvalsh)
// before the next is written; a feature larger than that gets a buffer of its own size. One
// buffer for every feature (AZ-NAS: ~90 MB) cost more in page faults than the pass itself: a
// block that large is mapped fresh by every call (glibc serves at most 32 MB from its heap).
// Each feature's spectrum depends on its own rows only, so segments change no value.
constexpr int64_t kSegment = int64_t(1) << 21;

std::vector<at::Tensor> channel_spectra_cpu(at::TensorList feats, c10::string_view kind_name) {
  const int kind = check_channel_spectra_inputs(feats, std::string_view(kind_name.data(), kind_name.size()));
  const int64_t T = static_cast<int64_t>(feats.size());
  if (T == 0) return {};
  std::vector<int64_t> C, P, zoff, order;
  int64_t total = 0;
  spectra_layout(feats, C, P, zoff, order, total);
  std::vector<at::Tensor> keep(T);
  for (int64_t t = 0; t < T; ++t) keep[t] = feats[t].contiguous();
  std::vector<at::Tensor> out(T);
  at::Tensor scratch;
  for (int64_t s = 0; s < T;) {
    // the segment order[s, e): as many features as fit in kSegment doubles (at least one)
    int64_t e = s, size = 0;
    while (e < T && (e == s || size + C[order[e]] * P[order[e]] <= kSegment)) size += C[order[e]] * P[order[e]], ++e;
    const int64_t n = e - s;
    std::vector<int64_t> lc(n), lp(n), loff(n), lorder(n), row0(n + 1, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = order[s + i];
      lc[i] = C[t], lp[i] = P[t], loff[i] = zoff[t] - zoff[order[s]], lorder[i] = i;
      row0[i + 1] = row0[i] + C[t];
    }
    if (!scratch.defined() || scratch.numel() < size)
      scratch = at::empty({std::max<int64_t>(size, std::min<int64_t>(total, kSegment))},
                          feats[0].options().dtype(at::kDouble));
    at::Tensor z = scratch.narrow(0, 0, size);
    double* zp = z.data_ptr<double>();
    const int64_t rows = row0[n];
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, size / std::max<int64_t>(rows, 1)));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats[0].scalar_type(), "channel_spectra_cpu", [&] {
      at::parallel_for(0, rows, grain, [&](int64_t lo, int64_t hi) {
        int64_t i = std::upper_bound(row0.begin(), row0.end(), lo) - row0.begin() - 1;
        for (int64_t r = lo; r < hi; ++r) {
          while (r >= row0[i + 1]) ++i;
          const int64_t c = r - row0[i];
          scale_row<scalar_t>(keep[order[s + i]].const_data_ptr<scalar_t>() + c * lp[i], lp[i], kind,
                              zp + loff[i] + c * lp[i]);
        }
      });
    });
    std::vector<at::Tensor> part = channel_spectra_finish(z, lc, lp, loff, lorder);
    for (int64_t i = 0; i < n; ++i) out[order[s + i]] = std::move(part[i]);
    s = e;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("channel_spectra", &channel_spectra_cpu);
}

}  // namespace zcfast

// Element-wise math and input checks of the #13 kernels, shared by the CPU and CUDA code.
//
//   sign_pack (SWAP, TE-NAS linear regions): x [R, L] -> int64 [R, ceil(L / 64)], bit j of word
//     w of row r is (x[r, 64 w + j] > 0); NaN is not positive; the last word's unused bits are 0.
//   distinct_rows (SWAP's reduction, TE-NAS's region count): the number of distinct rows of a
//     packed [R, W] int64 matrix; sign_pattern_count(x) = distinct_rows(sign_pack(x)), fused.
//   sign_sum (GradSign): per tensor g [N, ...] of per-sample gradients,
//     sum_theta | sum_i sign(g[i, theta]) |, sign(0) = sign(NaN) = 0. The inner sums are small
//     integers (|s| <= N): accumulated in int16 when N < 2^15 (CPU: 16-bit inputs only, whose lanes match),
//     else int32; the outer sum in int64.
//     Integers: exact, and the same whatever the thread split or launch shape.
//   channel_spectra (MeCo, AZ-NAS expressivity): per feature F [C, P] (channels x observations),
//     Z = rows of F centred (float64) and scaled: kind "corr" by 1 / ||row||, so Z Z^T is numpy's
//     corrcoef; a zero-variance or non-finite row becomes a zero row, which reproduces MeCo's
//     nan_to_num(corrcoef) = 0 for that channel's row and column (diagonal included);
//     kind "cov" by 1 / sqrt(max(P - 1, 1)), so Z Z^T is the ddof-1 covariance (a non-finite row
//     makes that matrix's eigenvalues all NaN). Then eigvalsh(Z Z^T), ascending.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "zcfast/checks.h"

namespace zcfast {

constexpr int64_t kSignWordBits = 64;

template <typename acc_t>
C10_HOST_DEVICE inline bool sign_bit(acc_t a) {
  return a > acc_t(0);  // NaN compares false
}

// sign(a) in {-1, 0, 1}; NaN gives 0 (both comparisons are false).
template <typename acc_t>
C10_HOST_DEVICE inline int sign_of(acc_t a) {
  return static_cast<int>(a > acc_t(0)) - static_cast<int>(a < acc_t(0));
}

inline int64_t sign_words(int64_t L) { return (L + kSignWordBits - 1) / kSignWordBits; }

// Spectra kinds: 0 corr, 1 cov.
inline int parse_spectra_kind(std::string_view kind) {
  if (kind == "corr") return 0;
  if (kind == "cov") return 1;
  TORCH_CHECK_VALUE(false, "channel_spectra: kind must be 'corr' or 'cov', got '", std::string(kind), "'");
  return -1;
}

inline void check_sign_pack_input(const at::Tensor& x, const char* op) {
  check_float_tensor(x, op, "x");
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must have shape [R, L] (rows, signs per row), got shape ",
                    x.sizes());
}

inline void check_distinct_rows_input(const at::Tensor& packed) {
  TORCH_CHECK_VALUE(packed.defined(), "distinct_rows: packed is undefined (None)");
  TORCH_CHECK_VALUE(packed.scalar_type() == at::kLong, "distinct_rows: packed must be int64 ",
                    "(sign_pack's output), got ", packed.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() == 2, "distinct_rows: packed must have shape [R, W], got shape ",
                    packed.sizes());
}

// sign_sum: every grads[i] a float tensor [N_i, ...] (at least 1 dim) on grads[0]'s device.
inline void check_sign_sum_inputs(at::TensorList grads) {
  for (size_t i = 0; i < grads.size(); ++i) {
    check_float_tensor(grads[i], "sign_sum", arg_name("grads", i));
    TORCH_CHECK_VALUE(grads[i].dim() >= 1, "sign_sum: grads[", i, "] must have shape [N, ...] ",
                      "(per-sample gradients, samples first), got a 0-dim tensor");
    TORCH_CHECK_VALUE(grads[i].device() == grads[0].device(), "sign_sum: grads[", i, "] is on ",
                      grads[i].device(), " but grads[0] is on ", grads[0].device(),
                      " (all tensors must be on one device)");
    TORCH_CHECK_VALUE(grads[i].size(0) < (int64_t(1) << 31), "sign_sum: grads[", i, "] has ",
                      grads[i].size(0), " samples, more than 2^31 - 1");
  }
}

// channel_spectra: every feats[i] a float tensor [C, P] sharing feats[0]'s dtype and device.
inline int check_channel_spectra_inputs(at::TensorList feats, std::string_view kind) {
  const int k = parse_spectra_kind(kind);
  for (size_t i = 0; i < feats.size(); ++i) {
    const at::Tensor& f = feats[i];
    check_float_tensor(f, "channel_spectra", arg_name("feats", i));
    TORCH_CHECK_VALUE(f.dim() == 2, "channel_spectra: feats[", i, "] must have shape [C, P] ",
                      "(channels, observations), got shape ", f.sizes());
    TORCH_CHECK_VALUE(f.scalar_type() == feats[0].scalar_type(), "channel_spectra: feats[", i,
                      "] has dtype ", f.scalar_type(), " but feats[0] has dtype ",
                      feats[0].scalar_type(), " (all tensors must share one dtype)");
    TORCH_CHECK_VALUE(f.device() == feats[0].device(), "channel_spectra: feats[", i, "] is on ",
                      f.device(), " but feats[0] is on ", feats[0].device(),
                      " (all tensors must be on one device)");
  }
  return k;
}

// The device-independent half of channel_spectra (csrc/common/channel_spectra_finish.cpp).
// z: one float64 buffer holding each feature t's scaled rows [C_t, P_t] at element offset
// zoff[t]; `order` lists the features sorted by (C, P), so equal shapes are adjacent in z.
// Forms the Gram matrices Z Z^T (one bmm per run of equal (C, P)), solves each run of equal C in
// one batched eigvalsh, and returns T float64 [C_t] (ascending). A matrix with a non-finite entry
// (kind "cov" only: "corr" rows are finite by construction) gets all-NaN eigenvalues; it is swapped
// for zeros before the solve so the others are unaffected.
std::vector<at::Tensor> channel_spectra_finish(const at::Tensor& z, const std::vector<int64_t>& C,
                                               const std::vector<int64_t>& P,
                                               const std::vector<int64_t>& zoff,
                                               const std::vector<int64_t>& order);

// Features sorted by (C, P) (stable) and the element offsets of their rows in the shared buffer.
inline void spectra_layout(at::TensorList feats, std::vector<int64_t>& C, std::vector<int64_t>& P,
                           std::vector<int64_t>& zoff, std::vector<int64_t>& order, int64_t& total) {
  const int64_t T = static_cast<int64_t>(feats.size());
  C.resize(T);
  P.resize(T);
  zoff.assign(T, 0);
  order.resize(T);
  for (int64_t t = 0; t < T; ++t) C[t] = feats[t].size(0), P[t] = feats[t].size(1);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return C[a] != C[b] ? C[a] < C[b] : P[a] < P[b];
  });
  total = 0;
  for (int64_t k = 0; k < T; ++k) {
    zoff[order[k]] = total;
    total += C[order[k]] * P[order[k]];
  }
}

}  // namespace zcfast

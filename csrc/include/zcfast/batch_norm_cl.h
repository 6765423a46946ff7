// Train-mode BatchNorm2d on channels_last tensors, with float64 statistics (the private copies
// of TE-NAS's ntk_gram, zcfast/proxies/builtin_needs.py, channels_last_). With R = N·H·W rows of
// C channels (x[r, c] in NHWC memory):
//   mean_c  = (1/R) Σ_r x[r, c]                          (float64)
//   var_c   = (1/R) Σ_r (x[r, c] - mean_c)²              (float64, biased)
//   invstd_c = 1 / sqrt(var_c + eps)
//   y[r, c] = (x[r, c] - mean_c) · invstd_c · w_c + b_c  (float64, rounded once to x's dtype)
// and its backward, from sg_c = Σ_r gy[r, c] and sgx_c = Σ_r gy[r, c] (x[r, c] - mean_c):
//   gb_c = sg_c,  gw_c = sgx_c · invstd_c,
//   gx[r, c] = w_c · invstd_c · (gy[r, c] - sg_c / R - (x[r, c] - mean_c) · invstd_c² · sgx_c / R).
// The CPU kernel takes both statistics in one pass of shifted sums, s = Σ (x - K_c) and
// q = Σ (x - K_c)² with K_c the first row's value (mean = K + s/R, var = q/R - (s/R)²: in float64
// with the shift, no cancellation that float32 outputs could see); the CUDA kernel in two passes
// (the mean, then the centred squares). Every sum runs over fixed blocks of kBnRowBlock rows (the
// same blocks on CPU and CUDA, whatever the thread count), each block's partial sums added in row
// order, then the blocks' partials in block order: deterministic, no atomics. PyTorch's own channels_last CPU kernel (one pass in
// float32) differs from float64 statistics by ~3e-5 on unit-scale inputs with a mean of 1, ~100x
// its NCHW kernel; this one by ~1e-7 (tests/test_ops_batch_norm_cl.py).
// The per-element math (bn_normalise, bn_grad_coefs, bn_input_grad) is shared by
// csrc/cpu/batch_norm_cl_cpu.cpp and csrc/cuda/batch_norm_cl_cuda.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <cstdint>

namespace zcfast {

constexpr int64_t kBnRowBlock = 1024;

inline int64_t bn_row_blocks(int64_t rows) { return (rows + kBnRowBlock - 1) / kBnRowBlock; }

// x: [N, C, H, W] float32/float64 with N·H·W >= 1; weight/bias: undefined or [C] of x's dtype
// and device; eps finite and >= 0.
inline void check_bn_cl_inputs(const char* op, const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias, double eps) {
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  TORCH_CHECK_VALUE(x.defined(), op, ": x is undefined (None)");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                    ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must have shape [N, C, H, W], got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(0) * x.size(2) * x.size(3) >= 1 && x.size(1) >= 1, op,
                    ": x must have at least one channel and one value per channel, got shape ", x.sizes());
  const char* names[2] = {"weight", "bias"};
  const c10::optional<at::Tensor>* ts[2] = {&weight, &bias};
  for (int i = 0; i < 2; ++i) {
    if (!ts[i]->has_value() || !(*ts[i])->defined()) continue;
    const at::Tensor& t = **ts[i];
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == x.size(1), op, ": ", names[i], " must have shape [C] = [",
                      x.size(1), "], got shape ", t.sizes());
    TORCH_CHECK_VALUE(t.scalar_type() == x.scalar_type(), op, ": ", names[i], " has dtype ", t.scalar_type(),
                      " but x has dtype ", x.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", names[i], " is on ", t.device(), " but x is on ",
                      x.device());
  }
}

// mean, var: [C] float64 (the forward's); gy: x's shape, dtype and device.
inline void check_bn_cl_backward_inputs(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& mean,
                                        const at::Tensor& var) {
  TORCH_CHECK_VALUE(gy.defined() && gy.sizes() == x.sizes() && gy.scalar_type() == x.scalar_type() &&
                        gy.device() == x.device(),
                    "batch_norm_cl_backward: gy must match x (shape ", x.sizes(), ", ", x.scalar_type(), ", ",
                    x.device(), "), got ", gy.defined() ? gy.sizes() : c10::IntArrayRef{});
  for (const at::Tensor* t : {&mean, &var}) {
    TORCH_CHECK_VALUE(t->defined() && t->dim() == 1 && t->size(0) == x.size(1) && t->scalar_type() == at::kDouble &&
                          t->device() == x.device(),
                      "batch_norm_cl_backward: mean and var must be [C] = [", x.size(1),
                      "] float64 on x's device (the forward's outputs)");
  }
}

C10_HOST_DEVICE inline double bn_invstd(double var, double eps) { return 1.0 / ::sqrt(var + eps); }

// y of one element, in float64, from the channel's scale = invstd · w and shift = b (w = 1, b = 0
// for an affine-free BatchNorm).
C10_HOST_DEVICE inline double bn_normalise(double x, double mean, double scale, double shift) {
  return (x - mean) * scale + shift;
}

// The per-channel coefficients of gx from the channel's sums sg = Σ gy, sgx = Σ gy (x - mean) over
// R rows: gx = a · (gy - gmean) - b · (x - mean), a = w·invstd, gmean = sg/R, b = w·invstd³·sgx/R.
struct BnGradCoefs {
  double a, gmean, b;
};

C10_HOST_DEVICE inline BnGradCoefs bn_grad_coefs(double w, double invstd, double sg, double sgx, double rows) {
  return {w * invstd, sg / rows, w * invstd * invstd * invstd * sgx / rows};
}

// gx of one element.
C10_HOST_DEVICE inline double bn_input_grad(double gy, double x, double mean, double a, double gmean, double b) {
  return a * (gy - gmean) - b * (x - mean);
}

}  // namespace zcfast

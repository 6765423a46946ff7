// Host-side input checks shared by the CPU and CUDA kernels. Every failure is a ValueError
// (c10::ValueError) whose message names the op and the offending argument, e.g.
//   "saliency: grads[3] has shape [4, 3] but params[3] has shape [3, 4]".
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/TensorBody.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <c10/util/ArrayRef.h>

#include <cmath>
#include <string>

#include "zcfast/reduce_kind.h"

namespace zcfast {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// float64 inputs accumulate in float64; float32/float16/bfloat16 in float32.
inline at::ScalarType acc_dtype_for(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline std::string arg_name(const char* list, size_t i) {
  return std::string(list) + "[" + std::to_string(i) + "]";
}

inline void check_float_tensor(const at::Tensor& t, const char* op, const std::string& name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined (None)");
  TORCH_CHECK_VALUE(is_supported_float(t.scalar_type()), op, ": ", name,
                    " must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
}

// Validates the saliency inputs and returns the parsed kind. All tensors must share one dtype
// and one device (that of params[0]); grads[i] must have the shape of params[i].
inline SaliencyKind check_saliency_inputs(at::TensorList params, at::TensorList grads,
                                          std::string_view kind) {
  const SaliencyKind k = parse_saliency_kind(kind);
  TORCH_CHECK_VALUE(params.size() == grads.size(), "saliency: params and grads must have the same ",
                    "length, got len(params)=", params.size(), " and len(grads)=", grads.size());
  if (params.empty()) return k;
  check_float_tensor(params[0], "saliency", "params[0]");
  const at::ScalarType dtype = params[0].scalar_type();
  const at::Device device = params[0].device();
  for (size_t i = 0; i < params.size(); ++i) {
    // Messages are only formatted on failure (TORCH_CHECK evaluates them lazily): the happy path
    // costs a few comparisons per tensor.
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK_VALUE(p.defined(), "saliency: params[", i, "] is undefined (None)");
    TORCH_CHECK_VALUE(g.defined(), "saliency: grads[", i, "] is undefined (None)");
    if (C10_UNLIKELY(p.scalar_type() != dtype || g.scalar_type() != dtype)) {
      check_float_tensor(p, "saliency", arg_name("params", i));
      check_float_tensor(g, "saliency", arg_name("grads", i));
      TORCH_CHECK_VALUE(p.scalar_type() == dtype, "saliency: params[", i, "] has dtype ",
                        p.scalar_type(), " but params[0] has dtype ", dtype,
                        " (all tensors must share one dtype)");
      TORCH_CHECK_VALUE(false, "saliency: grads[", i, "] has dtype ", g.scalar_type(),
                        " but params[", i, "] has dtype ", dtype);
    }
    TORCH_CHECK_VALUE(p.device() == device, "saliency: params[", i, "] is on ", p.device(),
                      " but params[0] is on ", device, " (all tensors must be on one device)");
    TORCH_CHECK_VALUE(g.device() == device, "saliency: grads[", i, "] is on ", g.device(),
                      " but params[", i, "] is on ", p.device());
    TORCH_CHECK_VALUE(g.sizes() == p.sizes(), "saliency: grads[", i, "] has shape ", g.sizes(),
                      " but params[", i, "] has shape ", p.sizes());
  }
  return k;
}

inline void check_fisher_inputs(const at::Tensor& act, const at::Tensor& grad) {
  check_float_tensor(act, "fisher", "act");
  check_float_tensor(grad, "fisher", "grad");
  TORCH_CHECK_VALUE(act.dim() >= 2, "fisher: act must have shape [N, C, ...] (at least 2 dims), ",
                    "got shape ", act.sizes());
  TORCH_CHECK_VALUE(grad.sizes() == act.sizes(), "fisher: grad has shape ", grad.sizes(),
                    " but act has shape ", act.sizes());
  TORCH_CHECK_VALUE(grad.scalar_type() == act.scalar_type(), "fisher: grad has dtype ",
                    grad.scalar_type(), " but act has dtype ", act.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == act.device(), "fisher: grad is on ", grad.device(),
                    " but act is on ", act.device());
}

// k is the score's regulariser: log(lambda + k) and 1 / (lambda + k) are only defined for every
// eigenvalue lambda >= 0 of a correlation matrix when k is finite and > 0.
inline void check_jacob_cov_inputs(const at::Tensor& jac, double k) {
  check_float_tensor(jac, "jacob_cov", "jacobians");
  TORCH_CHECK_VALUE(jac.dim() == 3, "jacob_cov: jacobians must have shape [M, N, D] ",
                    "(models, samples, input features), got shape ", jac.sizes());
  TORCH_CHECK_VALUE(std::isfinite(k) && k > 0.0, "jacob_cov: k must be a finite number > 0 ",
                    "(the paper uses 1e-5), got ", k);
}

// hamming_kernel: out is the [N, N] float64 or int64 accumulator (contiguous); every acts[i] is a
// float tensor [N, ...] on out's device.
inline void check_hamming_inputs(at::TensorList acts, const at::Tensor& out) {
  TORCH_CHECK_VALUE(out.defined(), "hamming_kernel: out is undefined (None)");
  TORCH_CHECK_VALUE(out.scalar_type() == at::kDouble || out.scalar_type() == at::kLong,
                    "hamming_kernel: out must be float64 or int64, got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.dim() == 2 && out.size(0) == out.size(1),
                    "hamming_kernel: out must have shape [N, N], got shape ", out.sizes());
  TORCH_CHECK_VALUE(out.is_contiguous(), "hamming_kernel: out must be contiguous");
  const int64_t N = out.size(0);
  for (size_t i = 0; i < acts.size(); ++i) {
    const at::Tensor& a = acts[i];
    check_float_tensor(a, "hamming_kernel", arg_name("acts", i));
    TORCH_CHECK_VALUE(a.dim() >= 1, "hamming_kernel: acts[", i, "] must have shape [N, ...] ",
                      "(at least 1 dim), got a 0-dim tensor");
    TORCH_CHECK_VALUE(a.size(0) == N, "hamming_kernel: acts[", i, "] has ", a.size(0),
                      " samples (dim 0) but out has shape ", out.sizes());
    TORCH_CHECK_VALUE(a.device() == out.device(), "hamming_kernel: acts[", i, "] is on ",
                      a.device(), " but out is on ", out.device());
  }
}

// moments state: T float64 contiguous tensors per list, each with grads[i]'s number of elements
// and device. `what` is the op name for messages.
inline void check_moments_list(at::TensorList state, const char* name, at::TensorList like,
                               const char* like_name, const char* what) {
  TORCH_CHECK_VALUE(state.size() == like.size(), what, ": ", name, " and ", like_name,
                    " must have the same length, got len(", name, ")=", state.size(), " and len(",
                    like_name, ")=", like.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const at::Tensor& s = state[i];
    TORCH_CHECK_VALUE(s.defined(), what, ": ", name, "[", i, "] is undefined (None)");
    TORCH_CHECK_VALUE(s.scalar_type() == at::kDouble, what, ": ", name, "[", i,
                      "] must be float64, got ", s.scalar_type());
    TORCH_CHECK_VALUE(s.is_contiguous(), what, ": ", name, "[", i, "] must be contiguous");
    TORCH_CHECK_VALUE(s.numel() == like[i].numel(), what, ": ", name, "[", i, "] has ", s.numel(),
                      " elements but ", like_name, "[", i, "] has ", like[i].numel());
    TORCH_CHECK_VALUE(s.device() == like[i].device(), what, ": ", name, "[", i, "] is on ",
                      s.device(), " but ", like_name, "[", i, "] is on ", like[i].device());
  }
}

// moments_update: grads[i] float (any of the four dtypes, may differ between tensors) on one
// device; count (batches already in the state) >= 0.
inline void check_moments_update_inputs(at::TensorList grads, at::TensorList mean_abs,
                                        at::TensorList mean, at::TensorList m2, int64_t count) {
  TORCH_CHECK_VALUE(count >= 0, "moments_update: count must be >= 0 (batches already in the ",
                    "state), got ", count);
  for (size_t i = 0; i < grads.size(); ++i) {
    check_float_tensor(grads[i], "moments_update", arg_name("grads", i));
    TORCH_CHECK_VALUE(grads[i].device() == grads[0].device(), "moments_update: grads[", i,
                      "] is on ", grads[i].device(), " but grads[0] is on ", grads[0].device(),
                      " (all tensors must be on one device)");
  }
  check_moments_list(mean_abs, "mean_abs", grads, "grads", "moments_update");
  check_moments_list(mean, "mean", grads, "grads", "moments_update");
  check_moments_list(m2, "m2", grads, "grads", "moments_update");
}

// zico_reduce: mean_abs and m2 as moments_update leaves them, after count >= 1 batches.
inline void check_zico_reduce_inputs(at::TensorList mean_abs, at::TensorList m2, int64_t count) {
  TORCH_CHECK_VALUE(count >= 1, "zico_reduce: count must be >= 1 (batches in the state), got ",
                    count);
  check_moments_list(mean_abs, "mean_abs", mean_abs, "mean_abs", "zico_reduce");
  check_moments_list(m2, "m2", mean_abs, "mean_abs", "zico_reduce");
  for (size_t i = 1; i < mean_abs.size(); ++i) {
    TORCH_CHECK_VALUE(mean_abs[i].device() == mean_abs[0].device(), "zico_reduce: mean_abs[", i,
                      "] is on ", mean_abs[i].device(), " but mean_abs[0] is on ",
                      mean_abs[0].device(), " (all tensors must be on one device)");
  }
}

}  // namespace zcfast

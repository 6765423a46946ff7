// Element-wise terms of the saliency reductions, shared by the CPU and CUDA kernels.
//
//   abs_prod  : sum_i |theta_i * g_i|   (snip; synflow on |theta|-networks)
//   prod      : sum_i  theta_i * g_i    (plain)
//   grad_norm : sqrt(sum_i g_i^2)       (grad_norm; the per-tensor norms are summed by the caller)
//   param_sq  : sum_i theta_i^2         (l2_norm)
//
// Note [saliency kinds are compile-time]: the kind string is parsed once on the host into a
// SaliencyKind and then switched into a template constant, so the inner loops carry no branch
// and unary kinds (grad_norm, param_sq) read only the one buffer they need: the kernels are
// memory-bound, so not touching the other buffer halves their traffic.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <string_view>

namespace zcfast {

enum class SaliencyKind : int { AbsProd = 0, Prod = 1, GradNorm = 2, ParamSq = 3 };

// The accepted spellings, in the order of the enum (for error messages).
inline const char* saliency_kind_names() { return "'abs_prod', 'prod', 'grad_norm', 'param_sq'"; }

inline SaliencyKind parse_saliency_kind(std::string_view kind) {
  if (kind == "abs_prod") return SaliencyKind::AbsProd;
  if (kind == "prod") return SaliencyKind::Prod;
  if (kind == "grad_norm") return SaliencyKind::GradNorm;
  if (kind == "param_sq") return SaliencyKind::ParamSq;
  TORCH_CHECK_VALUE(false, "saliency: kind must be one of ", saliency_kind_names(), ", got '",
                    std::string(kind), "'");
}

// True when the kind reads the parameters / the gradients.
constexpr bool kind_reads_params(SaliencyKind k) { return k != SaliencyKind::GradNorm; }
constexpr bool kind_reads_grads(SaliencyKind k) { return k != SaliencyKind::ParamSq; }

// One element's contribution, in the accumulation type acc_t.
template <SaliencyKind K, typename acc_t>
C10_HOST_DEVICE inline acc_t saliency_term(acc_t p, acc_t g) {
  if constexpr (K == SaliencyKind::AbsProd) {
    acc_t v = p * g;
    return v < acc_t(0) ? -v : v;
  } else if constexpr (K == SaliencyKind::Prod) {
    return p * g;
  } else if constexpr (K == SaliencyKind::GradNorm) {
    return g * g;
  } else {
    return p * p;
  }
}

// Turns a tensor's summed terms into its per-tensor value (only grad_norm takes a root).
template <SaliencyKind K, typename acc_t>
C10_HOST_DEVICE inline acc_t saliency_finish(acc_t s) {
  if constexpr (K == SaliencyKind::GradNorm) {
    return ::sqrt(s);
  } else {
    return s;
  }
}

}  // namespace zcfast

// Switch a runtime SaliencyKind into the compile-time constant `KIND` inside __VA_ARGS__.
#define ZCFAST_DISPATCH_SALIENCY_KIND(kind, ...)                         \
  [&] {                                                                  \
    switch (kind) {                                                      \
      case ::zcfast::SaliencyKind::AbsProd: {                            \
        constexpr auto KIND = ::zcfast::SaliencyKind::AbsProd;           \
        return __VA_ARGS__();                                            \
      }                                                                  \
      case ::zcfast::SaliencyKind::Prod: {                               \
        constexpr auto KIND = ::zcfast::SaliencyKind::Prod;              \
        return __VA_ARGS__();                                            \
      }                                                                  \
      case ::zcfast::SaliencyKind::GradNorm: {                           \
        constexpr auto KIND = ::zcfast::SaliencyKind::GradNorm;          \
        return __VA_ARGS__();                                            \
      }                                                                  \
      default: {                                                         \
        constexpr auto KIND = ::zcfast::SaliencyKind::ParamSq;           \
        return __VA_ARGS__();                                            \
      }                                                                  \
    }                                                                    \
  }()

// zcfast::batch_norm_cl and zcfast::batch_norm_cl_backward on CPU (formulas, block order and the
// proxies they serve: zcfast/batch_norm_cl.h): train-mode BatchNorm2d of a channels_last
// [N, C, H, W] tensor with float64 statistics (one pass of shifted sums), and its backward (one
// pass of sums, one elementwise pass). One at::parallel_for over fixed blocks of kBnRowBlock rows
// per pass; each block sums its rows into its own float64 partials (the inner loop over the C
// contiguous channels vectorises; AVX2 and baseline copies), and the partials are added in block
// order, so the result does not depend on the thread count. Replaces PyTorch's channels_last kernel, whose one-pass float32 statistics are
// ~100x less accurate than its NCHW kernel, and its NCHW kernel, which is ~2x slower around
// oneDNN's channels_last convolutions (bench/bench_ops_modern.py --only signs).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "zcfast/batch_norm_cl.h"
#include "zcfast/cpu_reduce.h"

namespace zcfast {
namespace {

// One row block's work, always inlined into a baseline and an AVX2 copy (Note [ISA dispatch] in
// zcfast/cpu_reduce.h: -ffp-contract=off and per-channel accumulators that add rows in order, so
// both copies give the same bits). The inner loops run over the C contiguous channels of a row.

// acc[0..C) += x - K, acc[C..2C) += (x - K)² over rows [r0, r1) (K: the shift, per channel).
template <typename scalar_t>
C10_ALWAYS_INLINE void stats_block(const scalar_t* C10_RESTRICT x, const double* C10_RESTRICT K,
                                   double* C10_RESTRICT acc, int64_t r0, int64_t r1, int64_t C) {
  double* C10_RESTRICT s = acc;
  double* C10_RESTRICT q = acc + C;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* C10_RESTRICT row = x + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const double d = static_cast<double>(row[c]) - K[c];
      s[c] += d;
      q[c] += d * d;
    }
  }
}

// y = (x - mean) · scale + shift over rows [r0, r1), in float64, rounded once.
template <typename scalar_t>
C10_ALWAYS_INLINE void normalise_block(const scalar_t* C10_RESTRICT x, scalar_t* C10_RESTRICT y,
                                       const double* C10_RESTRICT mean, const double* C10_RESTRICT scale,
                                       const double* C10_RESTRICT shift, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* C10_RESTRICT row = x + r * C;
    scalar_t* C10_RESTRICT out = y + r * C;
    for (int64_t c = 0; c < C; ++c)
      out[c] = static_cast<scalar_t>(bn_normalise(static_cast<double>(row[c]), mean[c], scale[c], shift[c]));
  }
}

// acc[0..C) += gy, acc[C..2C) += gy (x - mean) over rows [r0, r1).
template <typename scalar_t>
C10_ALWAYS_INLINE void grad_sums_block(const scalar_t* C10_RESTRICT x, const scalar_t* C10_RESTRICT g,
                                       const double* C10_RESTRICT mean, double* C10_RESTRICT acc, int64_t r0,
                                       int64_t r1, int64_t C) {
  double* C10_RESTRICT sg = acc;
  double* C10_RESTRICT sgx = acc + C;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* C10_RESTRICT xr = x + r * C;
    const scalar_t* C10_RESTRICT gr = g + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const double gv = static_cast<double>(gr[c]);
      sg[c] += gv;
      sgx[c] += gv * (static_cast<double>(xr[c]) - mean[c]);
    }
  }
}

// gx = bn_input_grad over rows [r0, r1), from the per-channel coefficients (bn_grad_coefs).
template <typename scalar_t>
C10_ALWAYS_INLINE void input_grad_block(const scalar_t* C10_RESTRICT x, const scalar_t* C10_RESTRICT g,
                                        scalar_t* C10_RESTRICT gx, const double* C10_RESTRICT mean,
                                        const double* C10_RESTRICT a, const double* C10_RESTRICT gmean,
                                        const double* C10_RESTRICT b, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* C10_RESTRICT xr = x + r * C;
    const scalar_t* C10_RESTRICT gr = g + r * C;
    scalar_t* C10_RESTRICT out = gx + r * C;
    for (int64_t c = 0; c < C; ++c)
      out[c] = static_cast<scalar_t>(bn_input_grad(static_cast<double>(gr[c]), static_cast<double>(xr[c]), mean[c],
                                                   a[c], gmean[c], b[c]));
  }
}

#define ZCFAST_BN_COPIES(NAME, PARAMS, ARGS)                                                   \
  template <typename scalar_t>                                                                 \
  void NAME##_base PARAMS { NAME<scalar_t> ARGS; }                                             \
  ZCFAST_BN_AVX2(NAME, PARAMS, ARGS)

#ifdef ZCFAST_X86_DISPATCH
#define ZCFAST_BN_AVX2(NAME, PARAMS, ARGS) \
  template <typename scalar_t>             \
  __attribute__((target("avx2,fma,f16c"))) void NAME##_avx2 PARAMS { NAME<scalar_t> ARGS; }
#define ZCFAST_BN_PICK(NAME) (cpu_isa_level() >= 1 ? &NAME##_avx2<scalar_t> : &NAME##_base<scalar_t>)
#else
#define ZCFAST_BN_AVX2(NAME, PARAMS, ARGS)
#define ZCFAST_BN_PICK(NAME) (&NAME##_base<scalar_t>)
#endif

ZCFAST_BN_COPIES(stats_block, (const scalar_t* x, const double* K, double* acc, int64_t r0, int64_t r1, int64_t C),
                 (x, K, acc, r0, r1, C))
ZCFAST_BN_COPIES(normalise_block,
                 (const scalar_t* x, scalar_t* y, const double* mean, const double* scale, const double* shift,
                  int64_t r0, int64_t r1, int64_t C),
                 (x, y, mean, scale, shift, r0, r1, C))
ZCFAST_BN_COPIES(grad_sums_block,
                 (const scalar_t* x, const scalar_t* g, const double* mean, double* acc, int64_t r0, int64_t r1,
                  int64_t C),
                 (x, g, mean, acc, r0, r1, C))
ZCFAST_BN_COPIES(input_grad_block,
                 (const scalar_t* x, const scalar_t* g, scalar_t* gx, const double* mean, const double* a,
                  const double* gmean, const double* b, int64_t r0, int64_t r1, int64_t C),
                 (x, g, gx, mean, a, gmean, b, r0, r1, C))

// Calls f(r0, r1) for every row block, in parallel.
template <typename F>
void for_blocks(int64_t rows, const F& f) {
  at::parallel_for(0, bn_row_blocks(rows), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) f(b, b * kBnRowBlock, std::min(rows, (b + 1) * kBnRowBlock));
  });
}

// out[c] = Σ_b partial[b, c] over the blocks, in block order.
void sum_blocks(const std::vector<double>& partial, int64_t blocks, int64_t width, std::vector<double>& out) {
  std::fill(out.begin(), out.end(), 0.0);
  for (int64_t b = 0; b < blocks; ++b) {
    const double* p = partial.data() + b * width;
    for (int64_t c = 0; c < width; ++c) out[c] += p[c];
  }
}

std::vector<double> channel_values(const c10::optional<at::Tensor>& t, int64_t C, double fill) {
  std::vector<double> out(C, fill);
  if (t.has_value() && t->defined()) {
    const at::Tensor v = t->to(at::kDouble).contiguous().cpu();
    const double* p = v.const_data_ptr<double>();
    std::copy(p, p + C, out.begin());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_cl_cpu(const at::Tensor& x_in,
                                                                 const c10::optional<at::Tensor>& weight,
                                                                 const c10::optional<at::Tensor>& bias, double eps) {
  check_bn_cl_inputs("batch_norm_cl", x_in, weight, bias, eps);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1), rows = x.numel() / C, blocks = bn_row_blocks(rows);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  at::Tensor mean_t = at::empty({C}, x.options().dtype(at::kDouble));
  at::Tensor var_t = at::empty({C}, x.options().dtype(at::kDouble));
  std::vector<double> partial(blocks * 2 * C), mean(C), var(C);
  const std::vector<double> w = channel_values(weight, C, 1.0), b = channel_values(bias, C, 0.0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_cl_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    // one pass of shifted sums in float64 (shift K: the first row, so the squares do not cancel)
    std::vector<double> K(C), both(2 * C);
    for (int64_t c = 0; c < C; ++c) K[c] = static_cast<double>(xp[c]);
    const auto stats = ZCFAST_BN_PICK(stats_block);
    for_blocks(rows, [&](int64_t b, int64_t r0, int64_t r1) {
      double* acc = partial.data() + b * 2 * C;
      std::fill(acc, acc + 2 * C, 0.0);
      stats(xp, K.data(), acc, r0, r1, C);
    });
    sum_blocks(partial, blocks, 2 * C, both);
    std::vector<double> scale(C);
    const double R = static_cast<double>(rows);
    for (int64_t c = 0; c < C; ++c) {
      const double ds = both[c] / R;
      mean[c] = K[c] + ds;
      var[c] = std::max(0.0, both[C + c] / R - ds * ds);
      scale[c] = bn_invstd(var[c], eps) * w[c];
    }
    const auto norm = ZCFAST_BN_PICK(normalise_block);
    for_blocks(rows, [&](int64_t, int64_t r0, int64_t r1) {
      norm(xp, yp, mean.data(), scale.data(), b.data(), r0, r1, C);
    });
  });
  std::copy(mean.begin(), mean.end(), mean_t.mutable_data_ptr<double>());
  std::copy(var.begin(), var.end(), var_t.mutable_data_ptr<double>());
  return {y, mean_t, var_t};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_cl_backward_cpu(
    const at::Tensor& gy_in, const at::Tensor& x_in, const c10::optional<at::Tensor>& weight,
    const at::Tensor& mean_t, const at::Tensor& var_t, double eps) {
  check_bn_cl_inputs("batch_norm_cl_backward", x_in, weight, c10::nullopt, eps);
  check_bn_cl_backward_inputs(gy_in, x_in, mean_t, var_t);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = gy_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1), rows = x.numel() / C, blocks = bn_row_blocks(rows);
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  at::Tensor gw = at::empty({C}, x.options());
  at::Tensor gb = at::empty({C}, x.options());
  const std::vector<double> w = channel_values(weight, C, 1.0);
  const double* mp = mean_t.const_data_ptr<double>();
  const double* vp = var_t.const_data_ptr<double>();
  const std::vector<double> mean(mp, mp + C);
  std::vector<double> invstd(C), partial(blocks * 2 * C);
  for (int64_t c = 0; c < C; ++c) invstd[c] = bn_invstd(vp[c], eps);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_cl_backward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = gy.const_data_ptr<scalar_t>();
    // both sums in one pass: partial[b] = [Σ gy (C values), Σ gy (x - mean) (C values)]
    const auto sums = ZCFAST_BN_PICK(grad_sums_block);
    for_blocks(rows, [&](int64_t b, int64_t r0, int64_t r1) {
      double* acc = partial.data() + b * 2 * C;
      std::fill(acc, acc + 2 * C, 0.0);
      sums(xp, gp, mean.data(), acc, r0, r1, C);
    });
    std::vector<double> both(2 * C);
    sum_blocks(partial, blocks, 2 * C, both);
    scalar_t* gwp = gw.mutable_data_ptr<scalar_t>();
    scalar_t* gbp = gb.mutable_data_ptr<scalar_t>();
    const double R = static_cast<double>(rows);
    std::vector<double> a(C), gmean(C), bcoef(C);
    for (int64_t c = 0; c < C; ++c) {
      const double sg = both[c], sgx = both[C + c];
      gwp[c] = static_cast<scalar_t>(sgx * invstd[c]);
      gbp[c] = static_cast<scalar_t>(sg);
      const BnGradCoefs k = bn_grad_coefs(w[c], invstd[c], sg, sgx, R);
      a[c] = k.a;
      gmean[c] = k.gmean;
      bcoef[c] = k.b;
    }
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    const auto ig = ZCFAST_BN_PICK(input_grad_block);
    for_blocks(rows, [&](int64_t, int64_t r0, int64_t r1) {
      ig(xp, gp, gxp, mean.data(), a.data(), gmean.data(), bcoef.data(), r0, r1, C);
    });
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("batch_norm_cl", &batch_norm_cl_cpu);
  m.impl("batch_norm_cl_backward", &batch_norm_cl_backward_cpu);
}

}  // namespace zcfast

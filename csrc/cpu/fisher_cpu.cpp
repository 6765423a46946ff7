// zcfast::fisher_reduce on CPU: the Fisher proxy's per-channel term for one layer.
//   act, grad : [N, C, *rest]
//   s[n, c]   = sum over rest of act[n, c, ...] * grad[n, c, ...]
//   per_channel[c] = 0.5 * mean_n s[n, c]^2,   total = sum_c per_channel[c]
// (Theis et al. 2018 / Turner et al. 2020, as used by the zero-cost "fisher" measure.)
//
// Note [fisher determinism]: s[n, c] is one contiguous run (after .contiguous()) summed by
// cpu_run_sum; the mean over n and the sum over c run in index order on one thread, so the
// result does not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "zcfast/checks.h"
#include "zcfast/cpu_reduce.h"

namespace zcfast {
namespace {

template <typename scalar_t>
void fisher_cpu_impl(const at::Tensor& act, const at::Tensor& grad, at::Tensor& per_channel,
                     at::Tensor& total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = act.size(0), C = act.size(1);
  const int64_t R = (N * C == 0) ? 0 : act.numel() / (N * C);
  const scalar_t* a = act.const_data_ptr<scalar_t>();
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  std::vector<acc_t> s(N * C);
  const auto run_sum = cpu_run_sum_dispatch<SaliencyKind::Prod, scalar_t, acc_t>();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(R, 1));
  at::parallel_for(0, N * C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      s[i] = run_sum(a + i * R, g + i * R, R);
    }
  });
  acc_t* out = per_channel.data_ptr<acc_t>();
  // mean over an empty batch is NaN, as torch.mean of an empty tensor.
  const acc_t inv_n = N > 0 ? acc_t(1) / acc_t(N) : std::numeric_limits<acc_t>::quiet_NaN();
  acc_t sum = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    acc_t sq = acc_t(0);
    for (int64_t n = 0; n < N; ++n) sq += s[n * C + c] * s[n * C + c];
    out[c] = acc_t(0.5) * sq * inv_n;
    sum += out[c];
  }
  *total.data_ptr<acc_t>() = sum;
}

std::tuple<at::Tensor, at::Tensor> fisher_cpu(const at::Tensor& act, const at::Tensor& grad) {
  check_fisher_inputs(act, grad);
  const at::ScalarType acc = acc_dtype_for(act.scalar_type());
  auto opts = at::TensorOptions().dtype(acc).device(at::kCPU);
  at::Tensor per_channel = at::empty({act.size(1)}, opts);
  at::Tensor total = at::empty({}, opts);
  const at::Tensor a = act.contiguous(), g = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, act.scalar_type(), "fisher_cpu", [&] {
    fisher_cpu_impl<scalar_t>(a, g, per_channel, total);
  });
  return {per_channel, total};
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("fisher_reduce", &fisher_cpu);
}

}  // namespace zcfast

// zcfast::moments_update_ and zcfast::zico_reduce on CPU: ZiCo (Li et al. 2023, "zico").
//   moments_update_: for every element of every gradient tensor, one Welford step with the
//     current mini-batch's gradient g (n = count + 1 batches after it), in place on the float64
//     state: mean_abs += (|g| - mean_abs) / n; d = g - mean; mean += d / n; m2 += d * (g - mean).
//     With count 0 the state is written without being read (welford_first in zcfast/modern.h).
//   zico_reduce: per tensor t, sum over its elements of mean_abs / sqrt(m2 / count), elements with
//     m2 == 0 (zero std) dropped. The proxy takes log of each nonzero sum and adds them up.
// One call covers the whole gradient list (Note [saliency work split]: tensors cut into chunks,
// a chunk's partial sum at its global index, summed per tensor in chunk order), so the result of
// zico_reduce does not depend on the thread count; the update is element-wise.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "zcfast/checks.h"
#include "zcfast/cpu_reduce.h"
#include "zcfast/modern.h"

namespace zcfast {
namespace {

constexpr int64_t kChunk = int64_t(1) << 15;          // elements per task / partial sum
constexpr int64_t kSerialBelow = int64_t(1) << 16;    // total elements below which one thread runs

struct ChunkRef {
  int32_t tensor;
  int64_t start;
  int64_t len;
};

std::vector<ChunkRef> make_chunks(at::TensorList like, std::vector<int64_t>* first_chunk) {
  std::vector<ChunkRef> chunks;
  const int64_t T = static_cast<int64_t>(like.size());
  if (first_chunk) first_chunk->assign(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    if (first_chunk) (*first_chunk)[t] = static_cast<int64_t>(chunks.size());
    const int64_t n = like[t].numel();
    for (int64_t s = 0; s < n; s += kChunk) chunks.push_back({static_cast<int32_t>(t), s, std::min(kChunk, n - s)});
  }
  if (first_chunk) (*first_chunk)[T] = static_cast<int64_t>(chunks.size());
  return chunks;
}

template <typename F>
void for_chunks(const std::vector<ChunkRef>& chunks, int64_t total, F&& f) {
  const int64_t C = static_cast<int64_t>(chunks.size());
  if (total < kSerialBelow || at::get_num_threads() == 1 || at::in_parallel_region()) {
    for (int64_t c = 0; c < C; ++c) f(c);
  } else {
    at::parallel_for(0, C, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) f(c);
    });
  }
}

template <typename scalar_t>
C10_ALWAYS_INLINE void update_run(const scalar_t* C10_RESTRICT g, double* C10_RESTRICT ma,
                                  double* C10_RESTRICT mu, double* C10_RESTRICT m2, int64_t len,
                                  double n) {
  if (n == 1.0) {  // count 0: the state is overwritten, never read (welford_first)
    for (int64_t k = 0; k < len; ++k) welford_first(static_cast<double>(g[k]), ma[k], mu[k], m2[k]);
  } else {
    for (int64_t k = 0; k < len; ++k) welford_step(static_cast<double>(g[k]), n, ma[k], mu[k], m2[k]);
  }
}

template <typename scalar_t>
using UpdateFn = void (*)(const scalar_t*, double*, double*, double*, int64_t, double);

template <typename scalar_t>
void update_run_base(const scalar_t* g, double* ma, double* mu, double* m2, int64_t len, double n) {
  update_run<scalar_t>(g, ma, mu, m2, len, n);
}

#ifdef ZCFAST_X86_DISPATCH
template <typename scalar_t>
__attribute__((target("avx2,fma,f16c"))) void update_run_avx2(const scalar_t* g, double* ma, double* mu,
                                                               double* m2, int64_t len, double n) {
  update_run<scalar_t>(g, ma, mu, m2, len, n);
}
#endif

template <typename scalar_t>
UpdateFn<scalar_t> update_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  if (cpu_isa_level() >= 1) return &update_run_avx2<scalar_t>;
#endif
  return &update_run_base<scalar_t>;
}

// Sum of zico_term over one run, with the lane pattern of cpu_run_sum (Note [lane accumulators]).
C10_ALWAYS_INLINE double zico_run(const double* C10_RESTRICT ma, const double* C10_RESTRICT m2,
                                  int64_t len, double n) {
  constexpr int L = CpuLanes<double>::kLanes;
  double lane[L];
  for (int j = 0; j < L; ++j) lane[j] = 0.0;
  int64_t i = 0;
  for (; i + L <= len; i += L)
    for (int j = 0; j < L; ++j) lane[j] += zico_term(ma[i + j], m2[i + j], n);
  for (int j = 0; i < len; ++i, ++j) lane[j] += zico_term(ma[i], m2[i], n);
  for (int w = L / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0];
}

using ZicoFn = double (*)(const double*, const double*, int64_t, double);

double zico_run_base(const double* ma, const double* m2, int64_t len, double n) {
  return zico_run(ma, m2, len, n);
}

#ifdef ZCFAST_X86_DISPATCH
__attribute__((target("avx2,fma,f16c"))) double zico_run_avx2(const double* ma, const double* m2,
                                                               int64_t len, double n) {
  return zico_run(ma, m2, len, n);
}
#endif

ZicoFn zico_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  if (cpu_isa_level() >= 1) return &zico_run_avx2;
#endif
  return &zico_run_base;
}

void moments_update_cpu(at::TensorList grads, at::TensorList mean_abs, at::TensorList mean,
                        at::TensorList m2, int64_t count) {
  check_moments_update_inputs(grads, mean_abs, mean, m2, count);
  const int64_t T = static_cast<int64_t>(grads.size());
  std::vector<at::Tensor> keep(T);
  int64_t total = 0;
  for (int64_t t = 0; t < T; ++t) {
    keep[t] = grads[t].contiguous();  // a no-op (no copy) for the usual contiguous .grad buffers
    total += grads[t].numel();
  }
  const std::vector<ChunkRef> chunks = make_chunks(grads, nullptr);
  const double n = static_cast<double>(count + 1);
  for_chunks(chunks, total, [&](int64_t c) {
    const ChunkRef& ch = chunks[c];
    const at::Tensor& g = keep[ch.tensor];
    double* ma = mean_abs[ch.tensor].data_ptr<double>() + ch.start;
    double* mu = mean[ch.tensor].data_ptr<double>() + ch.start;
    double* v = m2[ch.tensor].data_ptr<double>() + ch.start;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "moments_update_cpu", [&] {
      static const UpdateFn<scalar_t> update = update_dispatch<scalar_t>();
      update(g.const_data_ptr<scalar_t>() + ch.start, ma, mu, v, ch.len, n);
    });
  });
}

at::Tensor zico_reduce_cpu(at::TensorList mean_abs, at::TensorList m2, int64_t count) {
  check_zico_reduce_inputs(mean_abs, m2, count);
  const int64_t T = static_cast<int64_t>(mean_abs.size());
  at::Tensor out = at::empty({T}, at::TensorOptions().dtype(at::kDouble).device(at::kCPU));
  std::vector<int64_t> first;
  const std::vector<ChunkRef> chunks = make_chunks(mean_abs, &first);
  int64_t total = 0;
  for (int64_t t = 0; t < T; ++t) total += mean_abs[t].numel();
  std::vector<double> partial(chunks.size());
  const double n = static_cast<double>(count);
  const ZicoFn run = zico_dispatch();
  for_chunks(chunks, total, [&](int64_t c) {
    const ChunkRef& ch = chunks[c];
    partial[c] = run(mean_abs[ch.tensor].const_data_ptr<double>() + ch.start,
                          m2[ch.tensor].const_data_ptr<double>() + ch.start, ch.len, n);
  });
  double* o = out.data_ptr<double>();
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0;
    for (int64_t c = first[t]; c < first[t + 1]; ++c) s += partial[c];
    o[t] = s;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("moments_update_", &moments_update_cpu);
  m.impl("zico_reduce", &zico_reduce_cpu);
}

}  // namespace zcfast

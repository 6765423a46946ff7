// zcfast::saliency_reduce on CPU: per-tensor sums of |theta*g|, theta*g, g^2 (then a root) or
// theta^2 over a whole list of parameters in one call; serves snip, synflow, plain, grad_norm
// and l2_norm.
//
// Note [saliency work split]: every tensor is cut into chunks of kChunk elements (an empty
// tensor has none). Each chunk yields one partial sum, stored at its global chunk index; a
// finishing pass sums each tensor's partials in chunk order and the per-tensor values in tensor
// order. Threads only decide *who* computes a chunk, never how it is summed, so results are
// bit-identical for any thread count. The chunks are handed to at most get_num_threads() tasks,
// each a run of consecutive chunks holding about the same number of elements (a network has many
// tiny BatchNorm tensors and a few large convolutions, so splitting by chunk count would not
// balance). Small lists are summed on the calling thread (a parallel region costs microseconds).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "zcfast/checks.h"
#include "zcfast/cpu_reduce.h"

namespace zcfast {
namespace {

constexpr int64_t kChunk = int64_t(1) << 15;          // elements per partial sum
constexpr int64_t kSerialBelow = int64_t(1) << 16;    // total elements below which one thread runs

struct ChunkRef {
  int32_t tensor;
  int64_t start;
  int64_t len;
};

template <typename scalar_t, SaliencyKind K>
void saliency_cpu_impl(const std::vector<const void*>& pp, const std::vector<const void*>& gp,
                       const std::vector<int64_t>& numel, at::Tensor& per_tensor, at::Tensor& total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t T = static_cast<int64_t>(numel.size());

  // Chunk table and element prefix sums (for balancing).
  std::vector<ChunkRef> chunks;
  std::vector<int64_t> first_chunk(T + 1);
  int64_t total_elems = 0;
  for (int64_t t = 0; t < T; ++t) {
    first_chunk[t] = static_cast<int64_t>(chunks.size());
    for (int64_t s = 0; s < numel[t]; s += kChunk) {
      chunks.push_back({static_cast<int32_t>(t), s, std::min(kChunk, numel[t] - s)});
    }
    total_elems += numel[t];
  }
  first_chunk[T] = static_cast<int64_t>(chunks.size());
  const int64_t C = static_cast<int64_t>(chunks.size());
  std::vector<acc_t> partial(C);

  const RunSumFn<K, scalar_t, acc_t> run_sum = cpu_run_sum_dispatch<K, scalar_t, acc_t>();
  auto run_chunks = [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const ChunkRef& ch = chunks[c];
      const scalar_t* p = static_cast<const scalar_t*>(pp[ch.tensor]) + ch.start;
      const scalar_t* g = static_cast<const scalar_t*>(gp[ch.tensor]) + ch.start;
      partial[c] = run_sum(p, g, ch.len);
    }
  };

  const int64_t nthreads = std::max<int64_t>(1, at::get_num_threads());
  if (total_elems < kSerialBelow || nthreads == 1 || at::in_parallel_region()) {
    run_chunks(0, C);
  } else {
    // Task b covers the chunks whose first element lies in [b*E/n, (b+1)*E/n) of the
    // concatenated list; a chunk's owner is thus fixed by the data alone.
    std::vector<int64_t> bounds(nthreads + 1, C);
    bounds[0] = 0;
    {
      int64_t b = 1, seen = 0;
      for (int64_t c = 0; c < C && b < nthreads; ++c) {
        while (b < nthreads && seen >= (total_elems * b) / nthreads) bounds[b++] = c;
        seen += chunks[c].len;
      }
      // Chunks not yet assigned a boundary end at C (already the default).
    }
    at::parallel_for(0, nthreads, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) run_chunks(bounds[b], bounds[b + 1]);
    });
  }

  // Finishing pass: per tensor in chunk order, then the total in tensor order.
  acc_t* out = per_tensor.data_ptr<acc_t>();
  acc_t sum = acc_t(0);
  for (int64_t t = 0; t < T; ++t) {
    acc_t s = acc_t(0);
    for (int64_t c = first_chunk[t]; c < first_chunk[t + 1]; ++c) s += partial[c];
    out[t] = saliency_finish<K, acc_t>(s);
    sum += out[t];
  }
  *total.data_ptr<acc_t>() = sum;
}

std::tuple<at::Tensor, at::Tensor> saliency_cpu(at::TensorList params, at::TensorList grads,
                                                c10::string_view kind) {
  const SaliencyKind k = check_saliency_inputs(params, grads, std::string_view(kind.data(), kind.size()));
  const int64_t T = static_cast<int64_t>(params.size());
  const at::ScalarType dtype = T ? params[0].scalar_type() : at::kFloat;
  const at::ScalarType acc = acc_dtype_for(dtype);
  auto opts = at::TensorOptions().dtype(acc).device(at::kCPU);
  at::Tensor per_tensor = at::empty({T}, opts);
  at::Tensor total = at::empty({}, opts);

  // Non-contiguous inputs are copied; contiguous ones are read in place (no per-tensor allocation).
  std::vector<at::Tensor> keep;
  std::vector<const void*> pp(T), gp(T);
  std::vector<int64_t> numel(T);
  for (int64_t t = 0; t < T; ++t) {
    const at::Tensor* p = &params[t];
    const at::Tensor* g = &grads[t];
    if (kind_reads_params(k) && !p->is_contiguous()) {
      keep.push_back(p->contiguous());
      pp[t] = keep.back().const_data_ptr();
    } else {
      pp[t] = p->const_data_ptr();
    }
    if (kind_reads_grads(k) && !g->is_contiguous()) {
      keep.push_back(g->contiguous());
      gp[t] = keep.back().const_data_ptr();
    } else {
      gp[t] = g->const_data_ptr();
    }
    numel[t] = params[t].numel();
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "saliency_cpu", [&] {
    ZCFAST_DISPATCH_SALIENCY_KIND(k, [&] {
      saliency_cpu_impl<scalar_t, KIND>(pp, gp, numel, per_tensor, total);
    });
  });
  return {per_tensor, total};
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("saliency_reduce", &saliency_cpu);
}

}  // namespace zcfast

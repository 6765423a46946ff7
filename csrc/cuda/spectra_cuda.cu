// zcfast::channel_spectra on CUDA: for T features F_t [C_t, P_t] (channels x observations),
//   kind "corr": eigvalsh(nan_to_num(corrcoef(F_t)))               (MeCo, Jiang et al. 2023)
//   kind "cov":  eigvalsh((F_t - mean)(F_t - mean)^T / (P_t - 1))  (AZ-NAS expressivity)
// ascending, float64, all T in one call. One block per row of every feature (a launch covers up
// to kSpecTensors features; the table travels by value as the kernel argument) computes the row's
// mean and centred sum of squares in float64 (block_sum: deterministic) and writes the scaled row
// (zcfast/signs.h) into one shared buffer laid out by (C, P); channel_spectra_finish
// (csrc/common) then does one bmm per run of equal (C, P) and one batched eigvalsh per run of
// equal C (as jacob_cov's kernel does for its correlation matrices).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "block_reduce.cuh"
#include "zcfast/signs.h"

namespace zcfast {
namespace cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kSpecTensors = 512;

struct SpectraMeta {
  const void* x[kSpecTensors];
  int64_t P[kSpecTensors];
  int64_t zoff[kSpecTensors];
  int32_t row_start[kSpecTensors + 1];  // rows of slot s: [row_start[s], row_start[s + 1])
  int32_t slots;
};
static_assert(sizeof(SpectraMeta) <= 32000, "kernel argument must stay below CUDA's 32764-byte limit");

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads)
spectra_rows_kernel(const SpectraMeta meta, int kind, double* __restrict__ z) {
  const int32_t b = blockIdx.x;
  int lo = 0, hi = meta.slots;  // the slot s with row_start[s] <= b < row_start[s + 1]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (meta.row_start[mid] <= b) lo = mid; else hi = mid;
  }
  const int64_t P = meta.P[lo], c = b - meta.row_start[lo];
  const scalar_t* xr = static_cast<const scalar_t*>(meta.x[lo]) + c * P;
  double* zr = z + meta.zoff[lo] + c * P;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) s += static_cast<double>(xr[i]);
  const double mean = P > 0 ? block_sum_broadcast(s) / static_cast<double>(P) : 0.0;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
    const double d = static_cast<double>(xr[i]) - mean;
    ss += d * d;
  }
  ss = block_sum_broadcast(ss);
  if (kind == 0) {
    const bool ok = ss > 0.0 && isfinite(ss);  // degenerate row -> zero row
    const double scale = ok ? 1.0 / ::sqrt(ss) : 0.0;
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) zr[i] = ok ? (static_cast<double>(xr[i]) - mean) * scale : 0.0;
  } else {
    const double scale = 1.0 / ::sqrt(static_cast<double>(P > 1 ? P - 1 : 1));
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) zr[i] = (static_cast<double>(xr[i]) - mean) * scale;
  }
}

std::vector<at::Tensor> channel_spectra_cuda(at::TensorList feats, c10::string_view kind_name) {
  const int kind = check_channel_spectra_inputs(feats, std::string_view(kind_name.data(), kind_name.size()));
  const int64_t T = static_cast<int64_t>(feats.size());
  if (T == 0) return {};
  TORCH_CHECK_VALUE(feats[0].is_cuda(), "channel_spectra: feats[0] is on ", feats[0].device(),
                    ", expected a CUDA device");
  const c10::cuda::CUDAGuard guard(feats[0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  std::vector<int64_t> C, P, zoff, order;
  int64_t total = 0;
  spectra_layout(feats, C, P, zoff, order, total);
  std::vector<at::Tensor> keep(T);
  for (int64_t t = 0; t < T; ++t) keep[t] = feats[t].contiguous();
  at::Tensor z = at::empty({total}, feats[0].options().dtype(at::kDouble));
  double* zp = z.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feats[0].scalar_type(), "channel_spectra_cuda", [&] {
    SpectraMeta meta;
    int slots = 0;
    int64_t rows = 0;
    auto flush = [&] {
      if (slots == 0) return;
      meta.slots = slots;
      meta.row_start[slots] = static_cast<int32_t>(rows);
      spectra_rows_kernel<scalar_t><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(meta, kind, zp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      slots = 0;
      rows = 0;
    };
    for (int64_t t = 0; t < T; ++t) {
      if (C[t] == 0) continue;
      TORCH_CHECK_VALUE(C[t] < (int64_t(1) << 30), "channel_spectra: feats[", t, "] has ", C[t],
                        " channels, more than one CUDA grid holds");
      if (slots == kSpecTensors || rows + C[t] >= (int64_t(1) << 31) - 1) flush();
      meta.x[slots] = keep[t].const_data_ptr();
      meta.P[slots] = P[t];
      meta.zoff[slots] = zoff[t];
      meta.row_start[slots] = static_cast<int32_t>(rows);
      rows += C[t];
      ++slots;
    }
    flush();
  });
  return channel_spectra_finish(z, C, P, zoff, order);
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(zcfast, CUDA, m) {
  m.impl("channel_spectra", &cuda::channel_spectra_cuda);
}

}  // namespace zcfast

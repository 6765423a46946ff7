// box_sum (the stride-1 "same" average pools of NB201's cells, for TE-NAS, SWAP and every proxy
// whose passes run them on a private copy; zcfast/proxies/builtin_needs.py, _BoxAvgPool):
//   out[..., i, j] = sum over dh in [-kh/2, kh/2], dw in [-kw/2, kw/2] (row-major, in-bounds only)
//                    of z[..., i + dh, j + dw]
// in z's dtype, each addition rounded as a PyTorch add of that dtype, starting from 0. That is
// the order of PyTorch's CPU avg_pool2d (the window row-major, per output), so that
// box_sum(x) / count is its forward bit for bit in float32/float64, and box_sum(g / count) its
// backward (which adds each output's g / count into its window's inputs in row-major output
// order: the same window, mirrored, and kh, kw are odd). Shared by the CPU and CUDA kernels
// (csrc/cpu/box_cpu.cpp, csrc/cuda/box_cuda.cu).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "zcfast/checks.h"

namespace zcfast {

// z: a float tensor of >= 2 dims ([..., H, W]); kh, kw: odd and >= 1.
inline void check_box_sum_inputs(const at::Tensor& z, int64_t kh, int64_t kw) {
  check_float_tensor(z, "box_sum", "z");
  TORCH_CHECK_VALUE(z.dim() >= 2, "box_sum: z must have shape [..., H, W] (at least 2 dims), got shape ",
                    z.sizes());
  TORCH_CHECK_VALUE(kh >= 1 && kw >= 1 && kh % 2 == 1 && kw % 2 == 1,
                    "box_sum: the window must be odd and >= 1 in both dims (a centred window), got kh=", kh,
                    ", kw=", kw);
}

// One output (i, j) of one [H, W] plane (row-major, contiguous), summed in the window's row-major
// order over its in-bounds positions.
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t box_window_sum(const scalar_t* plane, int64_t H, int64_t W, int64_t i,
                                               int64_t j, int64_t rh, int64_t rw) {
  scalar_t acc = scalar_t(0);
  for (int64_t dh = -rh; dh <= rh; ++dh) {
    const int64_t r = i + dh;
    if (r < 0 || r >= H) continue;
    for (int64_t dw = -rw; dw <= rw; ++dw) {
      const int64_t c = j + dw;
      if (c < 0 || c >= W) continue;
      acc += plane[r * W + c];
    }
  }
  return acc;
}

}  // namespace zcfast

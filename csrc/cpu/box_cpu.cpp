// zcfast::box_sum on CPU (formula, order and the proxies it serves: zcfast/box.h):
//   out[..., i, j] = sum of z[..., i + dh, j + dw] over the kh x kw window, row-major, in-bounds.
// One at::parallel_for over the [H, W] planes. Per output row, the window's (dh, dw) are the
// outer loops and the columns the inner one, so every output still receives its additions in the
// window's row-major order while the inner loop runs over contiguous memory (vectorised).
// Replaces kh·kw shifted-slice adds over the whole tensor (plus a pad and a clone) by one pass.
// A channels_last input keeps its layout (box_rows_cl: the same additions, channels inner).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "zcfast/box.h"

namespace zcfast {
namespace {

template <typename scalar_t>
void box_plane(const scalar_t* in, scalar_t* out, int64_t H, int64_t W, int64_t rh, int64_t rw) {
  for (int64_t i = 0; i < H; ++i) {
    scalar_t* o = out + i * W;
    std::fill(o, o + W, scalar_t(0));
    for (int64_t dh = -rh; dh <= rh; ++dh) {
      const int64_t r = i + dh;
      if (r < 0 || r >= H) continue;
      const scalar_t* row = in + r * W;
      for (int64_t dw = -rw; dw <= rw; ++dw) {
        const int64_t j0 = std::max<int64_t>(0, -dw), j1 = std::min<int64_t>(W, W - dw);
        const scalar_t* src = row + dw;
        for (int64_t j = j0; j < j1; ++j) o[j] += src[j];
      }
    }
  }
}

// One window row's three additions, left to right, onto acc.
template <typename scalar_t>
inline scalar_t add_row3(scalar_t acc, const scalar_t* __restrict__ r, int64_t j) {
  acc = acc + r[j - 1];
  acc = acc + r[j];
  return acc + r[j + 1];
}

// The 3x3 window (NB201's pools): each output row in one loop over its columns, the additions of
// an interior column written out in the window's order (from 0, so -0.0 sums to +0.0 as in
// PyTorch's kernel; the rows above and below only where they exist, tests the compiler hoists out
// of the loop); the first and last columns take box_window_sum. Loads from three input rows, one
// store per output: vectorised and several times faster than nine passes over the row.
template <typename scalar_t>
void box_plane_3x3(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t H, int64_t W) {
  for (int64_t i = 0; i < H; ++i) {
    scalar_t* __restrict__ o = out + i * W;
    o[0] = box_window_sum<scalar_t>(in, H, W, i, 0, 1, 1);
    if (W > 1) o[W - 1] = box_window_sum<scalar_t>(in, H, W, i, W - 1, 1, 1);
    const bool up = i > 0, down = i + 1 < H;
    const scalar_t* __restrict__ a = in + (up ? i - 1 : i) * W;
    const scalar_t* __restrict__ b = in + i * W;
    const scalar_t* __restrict__ c = in + (down ? i + 1 : i) * W;
    for (int64_t j = 1; j + 1 < W; ++j) {
      scalar_t acc = scalar_t(0);
      if (up) acc = add_row3(acc, a, j);
      acc = add_row3(acc, b, j);
      if (down) acc = add_row3(acc, c, j);
      o[j] = acc;
    }
  }
}

// A channels_last [N, C, H, W] tensor (memory [N, H, W, C]): the same additions per output in the
// same (window row-major) order, from 0, with the C contiguous channels as the inner loop; so the
// values are the NCHW kernel's bit for bit, in the input's layout. One at::parallel_for over the
// N·H output rows.
template <typename scalar_t>
void box_rows_cl(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t H, int64_t W, int64_t C,
                 int64_t rh, int64_t rw, int64_t lo, int64_t hi) {
  const int64_t row = W * C;
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t n = t / H, i = t % H;
    scalar_t* __restrict__ o = out + t * row;
    std::fill(o, o + row, scalar_t(0));
    for (int64_t dh = -rh; dh <= rh; ++dh) {
      const int64_t r = i + dh;
      if (r < 0 || r >= H) continue;
      const scalar_t* __restrict__ src = in + (n * H + r) * row;
      for (int64_t dw = -rw; dw <= rw; ++dw) {
        const int64_t j0 = std::max<int64_t>(0, -dw), j1 = std::min<int64_t>(W, W - dw);
        const scalar_t* __restrict__ s = src + dw * C;
        for (int64_t k = j0 * C; k < j1 * C; ++k) o[k] += s[k];
      }
    }
  }
}

at::Tensor box_sum_cpu(const at::Tensor& z_in, int64_t kh, int64_t kw) {
  check_box_sum_inputs(z_in, kh, kw);
  if (z_in.dim() == 4 && !z_in.is_contiguous() && z_in.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      z_in.numel() > 0) {
    at::Tensor out = at::empty_like(z_in, at::MemoryFormat::ChannelsLast);
    const int64_t N = z_in.size(0), C = z_in.size(1), H = z_in.size(2), W = z_in.size(3);
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(W * C * kh * kw, 1));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z_in.scalar_type(), "box_sum_cpu_cl", [&] {
      const scalar_t* in = z_in.const_data_ptr<scalar_t>();
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N * H, grain, [&](int64_t lo, int64_t hi) {
        box_rows_cl<scalar_t>(in, o, H, W, C, kh / 2, kw / 2, lo, hi);
      });
    });
    return out;
  }
  const at::Tensor z = z_in.contiguous();
  at::Tensor out = at::empty_like(z, at::MemoryFormat::Contiguous);
  const int64_t H = z.size(-2), W = z.size(-1);
  const int64_t plane = H * W;
  if (plane == 0 || z.numel() == 0) return out;
  const int64_t planes = z.numel() / plane;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(plane * kh * kw, 1));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "box_sum_cpu", [&] {
    const scalar_t* in = z.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, planes, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        if (kh == 3 && kw == 3) {
          box_plane_3x3<scalar_t>(in + p * plane, o + p * plane, H, W);
        } else {
          box_plane<scalar_t>(in + p * plane, o + p * plane, H, W, kh / 2, kw / 2);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) {
  m.impl("box_sum", &box_sum_cpu);
}

}  // namespace zcfast

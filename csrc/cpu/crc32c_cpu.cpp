// zcfast::crc32c_segments on the CPU (issue #14): the CRC-32C (Castagnoli) of S byte segments of one
// buffer, in one call:
//   out[s] = crc32c(data[offsets[s] : offsets[s] + lengths[s]])      (int64 in [0, 2^32))
//   crc32c(b) = ~R(~0, b): R the reflected CRC of polynomial 0x82F63B78, byte by byte
//     c ^= byte; 8 times: c = (c >> 1) ^ (0x82F63B78 & -(c & 1))
//   so crc32c("123456789") = 0xE3069283 and crc32c("") = 0.
// Serves zcfast.formats.tfrecord: a TFRecord frames each record with the masked CRC-32C of its 8
// length bytes and of its data; the reader checks every CRC of a chunk of the file (thousands of
// records) with one call. CPU only: file bytes are read into CPU memory, so a tensor on another
// device is refused with a ValueError (the op is registered for the CUDA key only to say so).
//
// Segments are split over threads (at::parallel_for) when there is enough work. Each segment is
// hashed with the SSE4.2 crc32 instruction (8 bytes a step) where the CPU has it and the vector
// copies are allowed (ZCFAST_CPU_ISA >= 1, as the other kernels), else with slice-by-8 tables;
// both compute the same polynomial, so the results are identical (tests compare both copies).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <cstring>

#include "zcfast/cpu_reduce.h"  // cpu_isa_level, ZCFAST_X86_DISPATCH
#include "zcfast/crc32c.h"

#ifdef ZCFAST_X86_DISPATCH
#include <immintrin.h>
#endif

namespace zcfast {
namespace {

constexpr int64_t kSerialBytes = int64_t(1) << 18;  // total bytes below: one thread

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// t[0] = the bytewise table; t[k][b] = the CRC of byte b followed by k zero bytes (slice-by-8).
const Tables& tables() {
  static const Tables t = [] {
    Tables r{};
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kCrc32cPoly & (0u - (c & 1u)));
      r[0][b] = c;
    }
    for (int k = 1; k < 8; ++k)
      for (uint32_t b = 0; b < 256; ++b) r[k][b] = (r[k - 1][b] >> 8) ^ r[0][r[k - 1][b] & 0xFFu];
    return r;
  }();
  return t;
}

// Raw (unfinalised) update of c over n bytes, slice-by-8.
uint32_t crc_update_table(uint32_t c, const uint8_t* p, int64_t n) {
  const Tables& t = tables();
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= c;
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFFu];
  return c;
}

#ifdef ZCFAST_X86_DISPATCH
__attribute__((target("sse4.2"))) uint32_t crc_update_sse42(uint32_t c, const uint8_t* p, int64_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c64);
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

using UpdateFn = uint32_t (*)(uint32_t, const uint8_t*, int64_t);

UpdateFn crc_update_dispatch() {
#ifdef ZCFAST_X86_DISPATCH
  static const bool sse42 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  if (sse42 && cpu_isa_level() >= 1) return &crc_update_sse42;
#endif
  return &crc_update_table;
}

void check_inputs(const at::Tensor& data, const at::Tensor& offsets, const at::Tensor& lengths) {
  const char* names[3] = {"data", "offsets", "lengths"};
  const at::Tensor* ts[3] = {&data, &offsets, &lengths};
  for (int i = 0; i < 3; ++i) {
    TORCH_CHECK_VALUE(ts[i]->defined(), "crc32c_segments: ", names[i], " is undefined (None)");
    TORCH_CHECK_VALUE(ts[i]->device().is_cpu(), "crc32c_segments: ", names[i], " is on ", ts[i]->device(),
                      "; the op runs on the CPU only (file bytes are read into CPU memory)");
    TORCH_CHECK_VALUE(ts[i]->dim() == 1, "crc32c_segments: ", names[i], " must be 1-D, got shape ",
                      ts[i]->sizes());
  }
  TORCH_CHECK_VALUE(data.scalar_type() == at::kByte, "crc32c_segments: data must be uint8 (bytes), got ",
                    data.scalar_type());
  TORCH_CHECK_VALUE(offsets.scalar_type() == at::kLong, "crc32c_segments: offsets must be int64, got ",
                    offsets.scalar_type());
  TORCH_CHECK_VALUE(lengths.scalar_type() == at::kLong, "crc32c_segments: lengths must be int64, got ",
                    lengths.scalar_type());
  TORCH_CHECK_VALUE(offsets.size(0) == lengths.size(0), "crc32c_segments: offsets has ", offsets.size(0),
                    " entries but lengths has ", lengths.size(0));
}

at::Tensor crc32c_segments_cpu(const at::Tensor& data_in, const at::Tensor& offsets_in,
                               const at::Tensor& lengths_in) {
  check_inputs(data_in, offsets_in, lengths_in);
  const at::Tensor data = data_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const at::Tensor lengths = lengths_in.contiguous();
  const int64_t N = data.size(0), S = offsets.size(0);
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int64_t* len = lengths.const_data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK_VALUE(off[s] >= 0 && len[s] >= 0 && off[s] <= N && len[s] <= N - off[s],
                      "crc32c_segments: segment ", s, " (offset ", off[s], ", length ", len[s],
                      ") is outside data of ", N, " bytes");
    total += len[s];
  }
  at::Tensor out = at::empty({S}, offsets.options());
  int64_t* o = out.data_ptr<int64_t>();
  const uint8_t* d = N ? data.const_data_ptr<uint8_t>() : nullptr;
  const UpdateFn update = crc_update_dispatch();
  auto body = [&](int64_t lo, int64_t hi) {
    for (int64_t s = lo; s < hi; ++s)
      o[s] = static_cast<int64_t>(~update(0xFFFFFFFFu, len[s] ? d + off[s] : nullptr, len[s]) & 0xFFFFFFFFu);
  };
  if (S == 0) return out;
  if (total < kSerialBytes || at::get_num_threads() == 1 || at::in_parallel_region()) {
    body(0, S);
  } else {
    at::parallel_for(0, S, 16, body);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zcfast, CPU, m) { m.impl("crc32c_segments", &crc32c_segments_cpu); }
// A CUDA tensor reaches the same function, whose first check refuses it with a ValueError.
TORCH_LIBRARY_IMPL(zcfast, CUDA, m) { m.impl("crc32c_segments", &crc32c_segments_cpu); }

}  // namespace zcfast

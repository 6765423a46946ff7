// CRC-32C (Castagnoli) constants shared by the CPU kernel (csrc/cpu/crc32c_cpu.cpp) and its
// documentation: the reflected polynomial and TFRecord's mask of a stored CRC.
#pragma once

#include <cstdint>

namespace zcfast {

// Reflected form of the Castagnoli polynomial 0x1EDC6F41 (iSCSI, ext4, TFRecord).
constexpr uint32_t kCrc32cPoly = 0x82F63B78u;

// TFRecord stores masked CRCs: ((c >> 15) | (c << 17)) + kTfrecordMaskDelta (mod 2^32).
constexpr uint32_t kTfrecordMaskDelta = 0xA282EAD8u;

inline uint32_t tfrecord_mask(uint32_t c) { return ((c >> 15) | (c << 17)) + kTfrecordMaskDelta; }

}  // namespace zcfast

// Multi-tensor apply for zcfast's list reductions (the ATen / apex design, trimmed to what the
// saliency reductions need).
//
// Note [chunking for list reductions]: each non-empty tensor is cut into chunks of kChunk
// elements; one CUDA block handles one chunk and writes one partial sum. The launch metadata
// (tensor addresses and sizes, and which tensor/chunk each block handles) travels by value as the
// kernel argument, so no host-to-device copy is needed. One launch holds up to kMaxTensors
// tensors and kMaxBlocks blocks; longer lists take several launches on the same stream. The
// metadata is ~16 KB: kernel arguments above 4 KB need CUDA >= 12.1 and sm_70+, which every
// toolkit and architecture zcfast builds for satisfies (CUDA 13 starts at sm_75).
// Blocks are numbered globally across launches in (tensor, chunk) order, so partial p of tensor
// t lives at chunk_offset[t] + chunk; a finishing kernel sums each tensor's partials in order.
#pragma once

#include <cstdint>

namespace zcfast {
namespace cuda {

constexpr int64_t kChunk = int64_t(1) << 16;  // elements per block (= zcfast.testing.CUDA_CHUNK)
constexpr int kMaxTensors = 320;               // = zcfast.testing.CUDA_MAX_TENSORS_PER_LAUNCH
constexpr int kMaxBlocks = 1280;                // = zcfast.testing.CUDA_MAX_BLOCKS_PER_LAUNCH
constexpr int kFinishMaxTensors = 4096;        // tensors per finishing launch

struct ListMeta {
  const void* a[kMaxTensors];         // params (or unused)
  const void* b[kMaxTensors];         // grads (or unused)
  int64_t numel[kMaxTensors];
  int64_t partial_base;               // global index of this launch's block 0
  uint16_t block_tensor[kMaxBlocks];  // slot in a/b/numel
  int32_t block_chunk[kMaxBlocks];    // chunk index within that tensor
};
static_assert(sizeof(ListMeta) <= 32000, "kernel argument must stay below CUDA's 32764-byte limit");

struct FinishMeta {
  int64_t first_tensor;                        // index of this launch's tensor 0
  int32_t offset[kFinishMaxTensors + 1];       // partial range of tensor i: [offset[i], offset[i+1])
};
static_assert(sizeof(FinishMeta) <= 32000, "kernel argument must stay below CUDA's 32764-byte limit");

}  // namespace cuda
}  // namespace zcfast

// Host-side packing of a tensor list into multi-tensor-apply launches (see
// Note [chunking for list reductions] in csrc/cuda/multi_tensor_apply.cuh). Header-only and
// device-independent so that the CPU build can expose it for tests (zcfast::_plan_list_launches):
// the CUDA kernels cannot run without a GPU, but the packing that feeds them can be checked.
#pragma once

#include <cstdint>
#include <vector>

namespace zcfast {

// Walks the non-empty tensors in order, cutting each into ceil(numel / chunk) chunks, one block
// per chunk. Calls
//   add_tensor(slot, t)        when tensor t takes table slot `slot` of the launch being filled,
//   add_block(b, slot, c)      for block b of that launch: chunk c of the tensor in `slot`,
//   launch(nblocks, base)      when the launch is full (max_tensors slots or max_blocks blocks)
//                              or the list ends; base = global index of its block 0.
// Blocks are numbered globally in (tensor, chunk) order, so tensor t's chunk c is global block
// offset[t] + c with offset the running sum of chunk counts. A tensor whose chunks straddle a
// launch boundary continues in slot 0 of the next launch (add_tensor is called again for it).
// Returns the total number of blocks.
template <typename AddTensor, typename AddBlock, typename Launch>
int64_t plan_list_launches(const std::vector<int64_t>& numel, int64_t chunk, int max_tensors,
                           int max_blocks, AddTensor&& add_tensor, AddBlock&& add_block,
                           Launch&& launch) {
  int nt = 0, nb = 0;
  int64_t base = 0;
  auto flush = [&] {
    if (nb == 0) return;
    launch(nb, base);
    base += nb;
    nb = 0;
  };
  for (int64_t t = 0; t < static_cast<int64_t>(numel.size()); ++t) {
    if (numel[t] == 0) continue;
    if (nt == max_tensors) {
      flush();
      nt = 0;
    }
    int slot = nt++;
    add_tensor(slot, t);
    const int64_t chunks = (numel[t] + chunk - 1) / chunk;
    for (int64_t c = 0; c < chunks; ++c) {
      if (nb == max_blocks) {
        flush();
        slot = 0;
        nt = 1;
        add_tensor(slot, t);
      }
      add_block(nb, slot, c);
      ++nb;
    }
  }
  flush();
  return base;
}

}  // namespace zcfast

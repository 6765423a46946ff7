// zcfast::_plan_list_launches: a test hook exposing plan_list_launches (csrc/include/zcfast/
// list_plan.h), the host-side packing used by the CUDA saliency kernel, on every build.
// Returns int64 [blocks, 4]: (launch, block within the launch, tensor, chunk), where the tensor
// is resolved through the launch's slot table as it stands when the launch is issued: exactly
// what a kernel would read from its metadata.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <vector>

#include "zcfast/list_plan.h"

namespace zcfast {

at::Tensor plan_list_launches_debug(c10::IntArrayRef numel, int64_t chunk, int64_t max_tensors,
                                    int64_t max_blocks) {
  TORCH_CHECK_VALUE(chunk > 0 && max_tensors > 0 && max_blocks > 0,
                    "_plan_list_launches: chunk, max_tensors and max_blocks must be positive");
  for (size_t i = 0; i < numel.size(); ++i)
    TORCH_CHECK_VALUE(numel[i] >= 0, "_plan_list_launches: numel[", i, "] is negative");
  std::vector<int64_t> sizes(numel.begin(), numel.end());
  std::vector<int64_t> slot_tensor(max_tensors, -1);
  std::vector<int64_t> block_slot(max_blocks, -1), block_chunk(max_blocks, -1);
  std::vector<int64_t> rows;
  int64_t launch_index = 0;
  plan_list_launches(
      sizes, chunk, static_cast<int>(max_tensors), static_cast<int>(max_blocks),
      [&](int slot, int64_t t) { slot_tensor[slot] = t; },
      [&](int b, int slot, int64_t c) {
        block_slot[b] = slot;
        block_chunk[b] = c;
      },
      [&](int nb, int64_t /*base*/) {
        for (int b = 0; b < nb; ++b) {
          rows.insert(rows.end(), {launch_index, b, slot_tensor[block_slot[b]], block_chunk[b]});
        }
        ++launch_index;
      });
  const int64_t n = static_cast<int64_t>(rows.size()) / 4;
  at::Tensor out = at::empty({n, 4}, at::TensorOptions().dtype(at::kLong));
  std::copy(rows.begin(), rows.end(), out.data_ptr<int64_t>());
  return out;
}

}  // namespace zcfast

// zcfast::cuda_version() for CUDA builds: the CUDA runtime version the kernels were compiled with.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace zcfast {

int64_t cuda_runtime_version() { return CUDART_VERSION; }

}  // namespace zcfast

// zcfast's op schemas, declared once; kernels are registered per backend in csrc/cpu/*_cpu.cpp
// and csrc/cuda/*_cuda.cu. The Python wrappers, shapes and semantics are in zcfast/ops.py.
//
// There is no pybind11: the extension module is an empty CPython module whose import runs the
// static initialisers below (TORCH_LIBRARY / TORCH_LIBRARY_IMPL), which register the ops with
// the dispatcher. It is built against the limited API (Py_LIMITED_API), so one binary serves
// every CPython >= 3.10.
#include <Python.h>
#include <torch/library.h>

#include <cstdint>

namespace zcfast {

#ifdef WITH_CUDA
int64_t cuda_runtime_version();  // csrc/cuda/version_cuda.cu
#endif
at::Tensor plan_list_launches_debug(c10::IntArrayRef numel, int64_t chunk, int64_t max_tensors,
                                    int64_t max_blocks);  // csrc/common/list_plan_debug.cpp

// CUDART_VERSION the CUDA kernels were compiled with (e.g. 13000), or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return cuda_runtime_version();
#else
  return -1;
#endif
}

}  // namespace zcfast

TORCH_LIBRARY(zcfast, m) {
  m.def("saliency_reduce(Tensor[] params, Tensor[] grads, str kind) -> (Tensor, Tensor)");
  m.def("fisher_reduce(Tensor act, Tensor grad) -> (Tensor, Tensor)");
  m.def("jacob_cov_score(Tensor jacobians, float k) -> (Tensor, Tensor)");
  // NWOT's Hamming kernel, accumulated into out [N, N] (csrc/cpu/hamming_cpu.cpp).
  m.def("hamming_kernel_(Tensor[] acts, Tensor(a!) out) -> ()");
  // ZiCo's streaming per-element gradient moments and their per-tensor sum (csrc/cpu/moments_cpu.cpp).
  m.def("moments_update_(Tensor[] grads, Tensor(a!)[] mean_abs, Tensor(b!)[] mean, "
        "Tensor(c!)[] m2, int count) -> ()");
  m.def("zico_reduce(Tensor[] mean_abs, Tensor[] m2, int count) -> Tensor");
  // #13: sign patterns (SWAP, TE-NAS), sign sums (GradSign), channel spectra (MeCo, AZ-NAS);
  // csrc/cpu/signs_cpu.cpp and csrc/cpu/spectra_cpu.cpp, math in zcfast/signs.h. The counts are
  // 0-dim int64 tensors (not ints) so that the ops trace under torch.compile.
  m.def("sign_pack(Tensor x) -> Tensor");
  m.def("distinct_rows(Tensor packed) -> Tensor");
  m.def("sign_pattern_count(Tensor x) -> Tensor");
  m.def("sign_sum(Tensor[] grads) -> Tensor");
  m.def("channel_spectra(Tensor[] feats, str kind) -> Tensor[]");
  // Stride-1 "same" window sums (NB201's 3x3 average pools on the private copies of TE-NAS,
  // SWAP, ...): csrc/cpu/box_cpu.cpp, csrc/cuda/box_cuda.cu, math in zcfast/box.h.
  m.def("box_sum(Tensor z, int kh, int kw) -> Tensor");
  // Train-mode BatchNorm2d of channels_last tensors with float64 statistics (the channels_last
  // private copies of TE-NAS's NTK): csrc/cpu/batch_norm_cl_cpu.cpp,
  // csrc/cuda/batch_norm_cl_cuda.cu, math in zcfast/batch_norm_cl.h. Returns (y, mean, var), the
  // statistics [C] float64 (var biased); the backward returns (gx, gweight, gbias).
  m.def("batch_norm_cl(Tensor x, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("batch_norm_cl_backward(Tensor gy, Tensor x, Tensor? weight, Tensor mean, Tensor var, float eps) "
        "-> (Tensor, Tensor, Tensor)");
  // #14: CRC-32C of byte segments of one CPU buffer (TFRecord framing); csrc/cpu/crc32c_cpu.cpp.
  m.def("crc32c_segments(Tensor data, Tensor offsets, Tensor lengths) -> Tensor");
  m.def("cuda_version() -> int", &zcfast::cuda_version);
  // Test hook: the CUDA saliency kernel's launch packing, runnable without a GPU.
  m.def("_plan_list_launches(int[] numel, int chunk, int max_tensors, int max_blocks) -> Tensor",
        &zcfast::plan_list_launches_debug);
}

// Note [scores are not differentiable]: the ops compute scores from gradients, never losses, so
// autograd is skipped (a fallthrough on the Autograd keys): inputs that require grad (e.g. the
// nn.Parameters themselves) give plain outputs with requires_grad=False and no graph is built.
TORCH_LIBRARY_IMPL(zcfast, Autograd, m) {
  m.impl("saliency_reduce", torch::CppFunction::makeFallthrough());
  m.impl("fisher_reduce", torch::CppFunction::makeFallthrough());
  m.impl("jacob_cov_score", torch::CppFunction::makeFallthrough());
  m.impl("hamming_kernel_", torch::CppFunction::makeFallthrough());
  m.impl("moments_update_", torch::CppFunction::makeFallthrough());
  m.impl("zico_reduce", torch::CppFunction::makeFallthrough());
  m.impl("sign_pack", torch::CppFunction::makeFallthrough());
  m.impl("distinct_rows", torch::CppFunction::makeFallthrough());
  m.impl("sign_pattern_count", torch::CppFunction::makeFallthrough());
  m.impl("sign_sum", torch::CppFunction::makeFallthrough());
  m.impl("channel_spectra", torch::CppFunction::makeFallthrough());
  m.impl("box_sum", torch::CppFunction::makeFallthrough());
  m.impl("batch_norm_cl", torch::CppFunction::makeFallthrough());   // differentiated by zcfast.ops
  m.impl("batch_norm_cl_backward", torch::CppFunction::makeFallthrough());
  m.impl("crc32c_segments", torch::CppFunction::makeFallthrough());
}

// `from zcfast import _C` only needs a module object; importing the .so runs the registrations.
// (PyMODINIT_FUNC is extern "C" and exported despite -fvisibility=hidden.)
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "zcfast's compiled ops (registered as torch.ops.zcfast.*)",
      -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}

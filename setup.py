"""Build script for zcfast and its C++/CUDA extension ``zcfast._C``.

Build (in place, incremental):   python setup.py build_ext --inplace
Install (editable):              pip install -e . --no-build-isolation

Build modes (printed at build time; ``zcfast info`` / ``zcfast.ops.build_info()`` tell at run time):

- ``ZCFAST_FORCE_CPU=1``: CPU kernels only.
- ``ZCFAST_FORCE_CUDA=1``: CPU and CUDA kernels; fails unless a CUDA toolkit (``CUDA_HOME``) and a
  CUDA build of torch are present. Works without a GPU when ``TORCH_CUDA_ARCH_LIST`` is set.
- otherwise (auto): CUDA kernels when a CUDA toolkit and a CUDA build of torch are present, else
  CPU only. With no GPU visible and no ``TORCH_CUDA_ARCH_LIST``, a default list is used (torch's
  own arch detection needs a GPU).
- ``DEBUG=1``: ``-O0 -g``.
- ``ZCFAST_NO_EXTENSION=1``: declare no extension (the Makefile's editable install: ``make build``
  compiles it in place right after, so the sources are compiled once rather than twice; pip's
  editable install would otherwise compile them into a temporary folder it then throws away).

torch must already be installed: pip's build isolation would fetch a different (multi-GB CUDA)
torch and compile against the wrong headers, so build with ``--no-build-isolation``.
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _version() -> str:
    with open(os.path.join(ROOT, "zcfast", "__init__.py"), encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError("zcfast/__init__.py has no __version__")


def _choose_mode(torch, cuda_home: str | None) -> tuple[str, str]:
    """Returns ("cpu" | "cuda", reason)."""
    force_cpu, force_cuda = _flag("ZCFAST_FORCE_CPU"), _flag("ZCFAST_FORCE_CUDA")
    if force_cpu and force_cuda:
        sys.exit("zcfast setup: set at most one of ZCFAST_FORCE_CPU and ZCFAST_FORCE_CUDA")
    if force_cpu:
        return "cpu", "ZCFAST_FORCE_CPU=1"
    has_toolkit = cuda_home is not None and os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    if force_cuda:
        if torch.version.cuda is None:
            sys.exit(f"zcfast setup: ZCFAST_FORCE_CUDA=1 but torch {torch.__version__} is a CPU-only "
                     "build; install a CUDA build of torch first")
        if not has_toolkit:
            sys.exit("zcfast setup: ZCFAST_FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME "
                     "to the toolkit folder whose bin/ holds nvcc")
        return "cuda", "ZCFAST_FORCE_CUDA=1"
    if torch.version.cuda is None:
        return "cpu", f"torch {torch.__version__} has no CUDA support"
    if not has_toolkit:
        return "cpu", "no CUDA toolkit found (set CUDA_HOME to build the CUDA kernels)"
    return "cuda", f"CUDA toolkit at {cuda_home} and torch built with CUDA {torch.version.cuda}"


def _extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    mode, reason = _choose_mode(torch, CUDA_HOME)
    debug = _flag("DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # py_limited_api=True makes torch add -DPy_LIMITED_API (abi3 wheel, CPython >= 3.10).
    # at::parallel_for is inlined from ATen's headers: without OpenMP flags it runs serially.
    # -ffp-contract=off keeps the CPU kernels' ISA copies bit-identical (Note [ISA dispatch]).
    if sys.platform == "win32":
        opt = ["/Od", "/Zi"] if debug else ["/O2"]
        cxx, link = opt + ["/openmp", "/fp:precise"], []
    elif sys.platform == "darwin":  # Apple clang has no -fopenmp: CPU kernels run single-threaded
        cxx, link = opt + ["-fvisibility=hidden", "-ffp-contract=off"], []
    else:
        cxx, link = opt + ["-fopenmp", "-fvisibility=hidden", "-ffp-contract=off"], ["-fopenmp"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/common/*.cpp")
                     + glob.glob("csrc/cpu/*.cpp"))
    common = dict(include_dirs=[os.path.join(ROOT, "csrc", "include")],
                  extra_link_args=link, py_limited_api=True)
    if mode == "cuda":
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
            reason += f"; no GPU visible, TORCH_CUDA_ARCH_LIST={DEFAULT_ARCH_LIST}"
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        ext = CUDAExtension(
            "zcfast._C", sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx + ["-DWITH_CUDA"],
                                "nvcc": opt + ["-DWITH_CUDA", "-lineinfo", "--expt-relaxed-constexpr", "--fmad=false"]},
            **common)
    else:
        ext = CppExtension("zcfast._C", sources, extra_compile_args={"cxx": cxx}, **common)
    print(f"zcfast setup: building the {mode.upper()} extension ({reason})"
          f"{' [DEBUG]' if debug else ''}", flush=True)
    return [ext]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    name="zcfast",
    version=_version(),
    description="Fast, faithful zero-cost proxies for neural architecture search (C++/CUDA ops).",
    packages=find_packages(include=["zcfast", "zcfast.*"]),
    include_package_data=True,
    package_data={"zcfast": ["assets/**/*", "py.typed"]},
    ext_modules=[] if _flag("ZCFAST_NO_EXTENSION") else _extensions(),
    cmdclass=_cmdclass(),
    python_requires=">=3.10",
    # torch is not pinned here (GPU users bring their own CUDA build); requirements.txt pins the
    # CPU wheel for development and CI. tqdm: progress bars; matplotlib: correlate's plots.
    install_requires=["torch>=2.6", "numpy", "tqdm", "matplotlib"],
    extras_require={
        "scan": ["pyarrow", "ray"],        # Parquet export, the Ray backend
        "test": ["pytest", "pytest-timeout", "psutil", "scipy", "pyarrow", "ray"],
    },
    entry_points={"console_scripts": ["zcfast=zcfast.cli:main"]},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)

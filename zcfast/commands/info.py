"""``zcfast info``: what this install is: versions, build mode, CUDA availability."""
from __future__ import annotations

import argparse
import json
import platform

HELP = "show zcfast's version, torch's version and how the kernels were built (CPU or CUDA)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def collect() -> dict[str, object]:
    """The facts ``zcfast info`` prints (importable for bug reports and tests)."""
    import torch

    import zcfast

    info: dict[str, object] = {
        "zcfast": zcfast.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "gpu_available": torch.cuda.is_available(),
    }
    try:
        import zcfast.ops as ops
    except ImportError as exc:
        info.update(extension="missing", build_mode=None, has_cuda=False, cuda_version=None,
                    extension_error=str(exc))
        return info
    build = ops.build_info()
    info.update(extension="ok", build_mode=build["mode"], has_cuda=ops.has_cuda(),
                cuda_version=build["cuda_version"], extension_path=ops._C.__file__)
    return info


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0 if info["extension"] == "ok" else 1

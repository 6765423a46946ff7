"""``zcfast info``: what this install is: versions, build mode, CUDA availability.

``zcfast info --proxies``: every registered proxy with its needs, how many mini-batches it reads,
the backend that runs it on NAS-Bench-201 networks (asked of ``zcfast.scoring.route``, the routing
``score_arch`` uses) and the proxy sets (``zcfast.options.PROXY_SETS``) that select it."""
from __future__ import annotations

import argparse
import json
import platform

HELP = "show zcfast's version, torch's version and how the kernels were built (CPU or CUDA)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--proxies", action="store_true",
                        help="list every registered proxy: its needs, mini-batches, the backend that runs it "
                             "on NB201 networks (nb201 = the stacked fast backend, module = hooks) and its proxy sets")


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


def proxies() -> list[dict[str, object]]:
    """One entry per registered proxy, in registry order: ``{"name", "builtin", "needs", "batches",
    "nb201_backend", "sets"}``. ``batches`` is the most mini-batches any of its needs (with what they
    require) reads; ``nb201_backend`` the name of the backend ``zcfast.scoring.route`` picks for it
    alone on NAS-Bench-201 (a call with several mini-batches always runs on the module backend)."""
    import zcfast.spaces
    from zcfast import options, scoring
    from zcfast.proxies.needs import closure
    from zcfast.proxies.registry import available_proxies, resolve

    nb201 = zcfast.spaces.get("nb201")
    members = {key: set(options.proxy_set(key)) for key in options.PROXY_SETS}
    out: list[dict[str, object]] = []
    for spec in resolve(available_proxies()):
        out.append({
            "name": spec.name,
            "builtin": spec.builtin,
            "needs": list(spec.needs),
            "batches": max([n.batches for n in closure(spec.needs)], default=1),
            "nb201_backend": scoring.route(nb201, [spec]).name,
            "sets": [key for key in options.PROXY_SETS if spec.name in members[key]],
        })
    return out


def format_proxies(rows: list[dict[str, object]]) -> str:
    """The ``zcfast info --proxies`` table (one line per proxy)."""
    head = ["proxy", "needs", "batches", "nb201 backend", "sets"]
    table = [[str(r["name"]) + ("" if r["builtin"] else " (user)"), ",".join(r["needs"]) or "-",  # type: ignore[arg-type]
              str(r["batches"]), str(r["nb201_backend"]), ",".join(r["sets"])] for r in rows]  # type: ignore[arg-type]
    widths = [max(len(row[i]) for row in [head] + table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head] + table]
    return "\n".join(lines + ["nb201 backend: nb201 = the stacked NAS-Bench-201 backend (zcfast.batched), "
                               "module = hooks on the network (any nn.Module); batches > 1: reads several "
                               "mini-batches (given one, it splits it)"])


def run(args: argparse.Namespace) -> int:
    if args.proxies:
        rows = proxies()
        print(json.dumps({"proxies": rows}, indent=2) if args.json else format_proxies(rows))
        return 0
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0 if info["extension"] == "ok" else 1

"""How the local pool's worker processes start: the start method and the preloaded forkserver.

Imports neither torch nor anything of zcfast, so a command can start the forkserver *before*
its own heavy imports (``zcfast scan`` does): the server's one ``import torch`` then runs side
by side with the parent's instead of after it, and when the scan opens its pool the workers
fork from a ready server in milliseconds. :mod:`zcfast.parallel` re-exports these names.

    resolve_start_method(start_method=None) -> str     # "forkserver" | "spawn" | "fork"
    FORKSERVER_PRELOAD: tuple[str, ...]                # modules the server imports once
    start_forkserver(modules=()) -> bool               # start it now (returns at once)
    stop_forkserver() -> None                          # end the server this process started
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Sequence

__all__ = ["FORKSERVER_PRELOAD", "resolve_start_method", "start_forkserver", "stop_forkserver"]

#: Modules the forkserver imports once before forking workers (with ``__main__``, the main
#: script, as spawn re-imports it; plus, per pool, the modules of the space and scorers).
FORKSERVER_PRELOAD: tuple[str, ...] = ("__main__", "torch", "zcfast.parallel", "zcfast.proxies",
                                       "zcfast.batched", "zcfast.spaces")


def resolve_start_method(start_method: str | None = None) -> str:
    """The local pool's start method: ``start_method``, else ``$ZCFAST_START_METHOD``, else
    ``forkserver`` where available (Linux), else ``spawn``.

    Raises:
        ValueError: a method this platform does not have, naming the ones it has.
    """
    default = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    method = start_method or os.environ.get("ZCFAST_START_METHOD") or default
    if method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start method {method!r} not available here; choose one of "
                         f"{', '.join(multiprocessing.get_all_start_methods())}")
    return method


def start_forkserver(modules: Sequence[str] = ()) -> bool:
    """Start this process's forkserver now, preloading :data:`FORKSERVER_PRELOAD` and
    ``modules``, without waiting for its imports (they run in the server while the caller goes
    on). A no-op returning False when the resolved start method is not ``forkserver`` or the
    server is already running (its preload list is then the one it started with; a pool's
    other modules are imported by each worker as it unpickles its spec). Returns True when it
    started the server.

    The server is this process's child and exits with it (a command that started it and is
    then refused ends it at once with :func:`stop_forkserver`).
    """
    try:
        if resolve_start_method() != "forkserver":
            return False
    except ValueError:
        return False  # a bad $ZCFAST_START_METHOD: the scan refuses it with its message
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the process-wide server multiprocessing keeps
    if getattr(server, "_forkserver_pid", None) is not None:
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        list(dict.fromkeys([*FORKSERVER_PRELOAD, *modules])))
    forkserver.ensure_running()
    return True


def stop_forkserver() -> None:
    """End this process's forkserver now, if one runs: SIGKILL to its pid (it may still be in
    its preload imports, where it would not notice a closed pipe), then reaped. Workers forked
    from it exit by themselves when their server is gone (zcfast.parallel's watchdog). Call it
    only for a server this process started and no longer needs."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server._stop()  # closes its pipe, reaps it, removes its socket; a later pool starts a new one

"""Where converted benchmark tables live, and how a source file keys them.

A benchmark file is converted once (``zcfast import SPACE PATH``, or on first use) into a compact
table under :func:`cache_dir`; the table's name carries :func:`fingerprint` of the source, so a
changed source file is converted again and a copied one (same bytes) reuses the table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["ENV_CACHE", "cache_dir", "fingerprint", "cached_path", "ImportResult"]

#: Environment variable naming the cache folder.
ENV_CACHE = "ZCFAST_CACHE"
_SAMPLE = 1 << 20  # bytes hashed at each end of a large file


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder of converted tables: ``override``, else ``$ZCFAST_CACHE``, else ``~/.cache/zcfast``.

    Not created here (writers create it when they write).
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "zcfast"


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A 16-hex-digit key of a source file's content: sha256 of its size and of its first and
    last MiB (the whole file when it is smaller than 2 MiB). For a folder (NATS-Bench's 15,626
    per-architecture files, 1.3 GB), of each file's relative name and size in sorted order, and the
    content of its files named ``meta*``: reading every file would cost more than a lookup should
    (a folder whose files change in content but not in size needs ``--force`` to convert again).

    Raises FileNotFoundError naming the path.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"benchmark file not found: {str(p)!r}")
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(p) if p.is_dir() else ''}\0{size}\0".encode())
        if p.is_dir() and not f.name.startswith("meta"):
            continue
        with open(f, "rb") as fh:
            if size <= 2 * _SAMPLE:
                h.update(fh.read())
            else:
                h.update(fh.read(_SAMPLE))
                fh.seek(size - _SAMPLE)
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


def cached_path(kind: str, source: str | os.PathLike[str], suffix: str,
                cache: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir(cache) / f"{kind}-{fingerprint(source)}{suffix}"`` (e.g. ``nb101-…/``)."""
    return cache_dir(cache) / f"{kind}-{fingerprint(source)}{suffix}"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What converting one benchmark file produced.

    Attributes:
        space: ``"nb101"`` or ``"nb201"``.
        source: the file or folder read.
        table: the converted table (a path under :func:`cache_dir`).
        entries: architectures in the table.
        seconds: wall time of the conversion (0.0 when ``cached``).
        cached: the table already existed for this source and was reused.
        details: format-specific counts (records read, epochs present, datasets, ...).
    """

    space: str
    source: str
    table: str
    entries: int
    seconds: float
    cached: bool
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """One line for the CLI: ``nb101: 423,624 architectures from X -> TABLE (12.3 s)``."""
        how = "reused" if self.cached else f"{self.seconds:.1f} s"
        extra = "".join(f", {k} {v}" for k, v in self.details.items())
        return f"{self.space}: {self.entries:,} architectures from {self.source} -> {self.table} ({how}{extra})"

"""NAS-Bench-301 surrogate ground truth for DARTS genotypes (optional ``nasbench301`` package).

NAS-Bench-301 (Siems et al., 2020; automl/nasbench301) has no table: accuracies are predicted by
surrogate models the user downloads (``nb_models_1.0.zip`` -> ``nb_models/xgb_v1.0``,
``gnn_gin_v1.0``, ``lgb_runtime_v1.0``; 0.9 models likewise) and loads with the package::

    import nasbench301 as nb
    model = nb.load_ensemble("nb_models/xgb_v1.0")
    acc = model.predict(config=genotype, representation="genotype", with_noise=False)  # percent

zcfast does exactly that, on demand, for ``--benchmark DIR`` of the darts space: ``DIR`` is the
models folder (``nb_models``, holding ``<model>_v<version>`` folders) or one model's folder.
The performance model is ``xgb`` unless only ``gnn_gin`` is there (or ``model=`` says which);
``metric="runtime"`` uses ``lgb_runtime``. Predictions are noise-free (``with_noise=False``), so
they are deterministic and the same for every run. Nothing is downloaded; without the package
:func:`problem` says what to install.

The genotype given to ``predict`` is a namedtuple ``Genotype(normal, normal_concat, reduce,
reduce_concat)`` with lists of ``(op, input)`` pairs, the layout of NB301's own ``Genotype``;
any object with those four attributes (e.g. :class:`zcfast.spaces.darts.Genotype`) is accepted.

Layering: imports nothing of zcfast's spaces or commands; ``nasbench301`` only when a prediction is asked for.
"""
from __future__ import annotations

import importlib
import math
import os
import threading
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INSTALL", "MODELS", "Genotype", "models_in", "problem", "load_model", "predict"]

#: What to install, for messages.
INSTALL = ("NAS-Bench-301 surrogate ground truth needs the nasbench301 package (pip install nasbench301, or "
           "git clone https://github.com/automl/nasbench301 && pip install ./nasbench301, with its "
           "requirements) and its surrogate models (nb_models_1.0.zip from the NAS-Bench-301 README), "
           "then --benchmark PATH/nb_models")
#: Model kinds a models folder may hold, by the metric they predict (first found is used).
MODELS: dict[str, tuple[str, ...]] = {"accuracy": ("xgb", "gnn_gin"), "runtime": ("lgb_runtime",)}
#: The genotype layout NB301's ``predict(representation="genotype")`` reads.
Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


def _module() -> Any:
    """The ``nasbench301`` module, or ValueError saying what to install."""
    try:
        return importlib.import_module("nasbench301")
    except ImportError as exc:
        raise ValueError(f"{INSTALL} (import nasbench301 failed: {exc})") from None


def _kind_of(folder: Path) -> str | None:
    """``xgb`` for ``xgb_v1.0`` etc.: the model kind a model folder's name says, or None."""
    name = folder.name
    for kinds in MODELS.values():
        for kind in kinds:
            if name == kind or name.startswith(f"{kind}_v"):
                return kind
    return None


def models_in(path: str | os.PathLike[str]) -> dict[str, Path]:
    """Model kind -> folder: ``path`` itself when it is one model's folder (named ``xgb_v1.0`` …),
    else each ``<kind>_v<version>`` folder inside it (the highest version of each kind).

    Raises:
        FileNotFoundError naming a missing path; ValueError when it holds no NB301 model folder.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"NAS-Bench-301 models folder not found: {str(p)!r}")
    if not p.is_dir():
        raise ValueError(f"NAS-Bench-301 --benchmark {str(p)!r} must be the surrogate models folder "
                         "(nb_models, holding xgb_v1.0 / gnn_gin_v1.0 / lgb_runtime_v1.0), not a file")
    own = _kind_of(p)
    if own is not None:
        return {own: p}
    found: dict[str, Path] = {}
    for sub in sorted(p.iterdir()):
        kind = _kind_of(sub) if sub.is_dir() else None
        if kind is not None:
            found[kind] = sub  # sorted: the last (highest) version wins
    if not found:
        raise ValueError(f"{str(p)!r} holds no NAS-Bench-301 surrogate model folder (expected xgb_v1.0, "
                         "gnn_gin_v1.0 or lgb_runtime_v1.0 inside it, as nb_models_1.0.zip unpacks)")
    return found


def _model_dir(path: str | os.PathLike[str], metric: str, model: str | None) -> Path:
    if metric not in MODELS:
        raise ValueError(f"NAS-Bench-301 unknown metric {metric!r}; expected one of {sorted(MODELS)} "
                         "(test = accuracy, the surrogate's prediction of the test accuracy)")
    found = models_in(path)
    kinds = (model,) if model is not None else MODELS[metric]
    for kind in kinds:
        if kind in found:
            return found[kind]
    raise ValueError(f"{str(path)!r} has no NAS-Bench-301 {'/'.join(kinds)} model for {metric} "
                     f"(it has {', '.join(sorted(found))})")


def problem(path: str | os.PathLike[str] | None, metric: str = "accuracy") -> str | None:
    """Why NB301 ground truth cannot be read from ``path`` (None: it can): no path given, the
    package not importable, or the path not holding the model. Does not load the model."""
    if path is None:
        return f"no NAS-Bench-301 models folder given; {INSTALL}"
    try:
        _module()
        _model_dir(path, metric, None)
    except (ValueError, OSError) as exc:
        return str(exc)
    return None


def load_model(path: str | os.PathLike[str], metric: str = "accuracy", model: str | None = None) -> Any:
    """The loaded surrogate (``nasbench301.load_ensemble``), once per folder per process."""
    folder = _model_dir(path, metric, model)
    key = str(folder.resolve())
    with _LOCK:
        if key not in _LOADED:
            nb = _module()
            try:
                _LOADED[key] = nb.load_ensemble(str(folder))
            except Exception as exc:  # noqa: BLE001 -- the package's own failure, as one line
                first = f"{type(exc).__name__}: {exc}".splitlines()[0]
                raise ValueError(f"nasbench301 could not load the surrogate model {key!r}: {first}") from None
        return _LOADED[key]


def as_nb301_genotype(genotype: Any) -> Genotype:
    """NB301's genotype layout (lists of ``(op, input)`` pairs) of any object with ``normal``,
    ``normal_concat``, ``reduce``, ``reduce_concat``."""
    try:
        return Genotype(normal=[(str(op), int(j)) for op, j in genotype.normal],
                        normal_concat=list(genotype.normal_concat),
                        reduce=[(str(op), int(j)) for op, j in genotype.reduce],
                        reduce_concat=list(genotype.reduce_concat))
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"not a DARTS genotype (normal/reduce lists of (op, input)): {genotype!r}") from None


def predict(path: str | os.PathLike[str], genotype: Any, metric: str = "accuracy", model: str | None = None) -> float:
    """The surrogate's noise-free prediction for ``genotype``: test accuracy in percent
    (``accuracy``) or training time in seconds (``runtime``).

    Raises:
        ValueError: package missing (naming what to install), no such model in ``path``, a
            prediction that is not a finite number.
    """
    surrogate = load_model(path, metric, model)
    value = surrogate.predict(config=as_nb301_genotype(genotype), representation="genotype", with_noise=False)
    try:
        out = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"the NAS-Bench-301 surrogate returned {value!r}, not a number") from None
    if not math.isfinite(out):
        raise ValueError(f"the NAS-Bench-301 surrogate returned a non-finite {metric} ({out})")
    return out

"""Load data pickles without executing them: a restricted unpickler.

``pickle.load`` runs whatever callable a file names (``os.system``, ``builtins.eval``, ...), so a
data file that ends in ``.pkl`` is code. zcfast never unpickles a data file with the plain
unpickler: every data pickle (NAS-Bench-101 records, and any later dataset loader) goes through
:func:`load`, whose ``find_class`` admits only what plain data needs:

- plain containers and scalars need no global at all (dict, list, tuple, str, bytes, int,
  float, bool, None are pickle opcodes), plus ``builtins`` set / frozenset / bytearray /
  complex, ``_codecs.encode`` (bytes in protocols 0-2) and ``collections.OrderedDict``;
- numpy arrays, dtypes and scalars: ``numpy.core.multiarray._reconstruct`` / ``scalar`` (and the
  ``numpy._core`` spelling of numpy 2), ``numpy.core.numeric._frombuffer`` (protocol 5),
  ``numpy.ndarray``, ``numpy.dtype`` and the ``numpy.dtypes.*DType`` classes.

Anything else is refused before it is called, with a :class:`UnsafePickleError` (a
``ValueError``) naming the file and the global::

    refusing to unpickle os.system from 'x.pkl': zcfast only loads plain containers and numpy
    arrays from pickles

Object arrays are not refused by this rule (their elements are unpickled by the same restricted
unpickler, so they can only hold admitted values).
"""
from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
from pathlib import Path
from typing import IO, Any

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "RestrictedUnpickler", "load", "loads"]

#: (module, name) pairs find_class admits; every other global is refused.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("set", "frozenset", "bytearray", "complex")]
    + [("_codecs", "encode")]  # how protocols 0-2 spell a bytes object
    + [("collections", "OrderedDict")]
    + [(mod, n) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
       for n in ("_reconstruct", "scalar")]
    + [(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")]  # protocol 5
    + [("numpy", "ndarray"), ("numpy", "dtype")]
)
#: numpy 2 pickles a dtype through its class, e.g. ``numpy.dtypes.Float64DType``
_NUMPY_DTYPE_MODULE = "numpy.dtypes"


class UnsafePickleError(ValueError):
    """A pickle names a global zcfast does not admit (it would run code)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`.

    Args:
        file: a binary file object.
        source: how messages name the file (its path).
    """

    def __init__(self, file: IO[bytes], source: str, *, encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 spell globals the Python 2 way (__builtin__.set): map them as pickle does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in ALLOWED_GLOBALS or (module == _NUMPY_DTYPE_MODULE and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name} from {self._source!r}: zcfast only loads plain "
            "containers and numpy arrays from pickles")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to unpickle a persistent id from {self._source!r}: zcfast only "
                                "loads plain containers and numpy arrays from pickles")


def load(path_or_file: str | os.PathLike[str] | IO[bytes], *, source: str | None = None,
         encoding: str = "ASCII") -> Any:
    """Unpickle plain data from a path or a binary file object, never running code.

    Args:
        path_or_file: a file path or an open binary file.
        source: the name used in messages (default: the path, or the file object's ``name``).
        encoding: how Python 2 byte strings are decoded (as :func:`pickle.load`); ``"latin1"``
            reads the Python 2 pickles of CIFAR and ImageNet16 (and the numpy arrays in them).

    Raises:
        FileNotFoundError: a path that does not exist.
        UnsafePickleError: the pickle names a refused global (nothing it names was called).
        ValueError: the file is not a readable pickle (truncated, not a pickle), naming it.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        p = Path(path_or_file)
        if not p.is_file():
            raise FileNotFoundError(f"pickle file not found: {str(p)!r}")
        with open(p, "rb") as f:
            return load(f, source=source or str(p), encoding=encoding)
    where = source or str(getattr(path_or_file, "name", "<pickle>"))
    try:
        return RestrictedUnpickler(path_or_file, where, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where!r} is not a readable pickle of plain data: "
                         f"{type(exc).__name__}: {exc}".splitlines()[0]) from None


def loads(data: bytes, *, source: str = "<bytes>", encoding: str = "ASCII") -> Any:
    """:func:`load` from bytes."""
    return load(io.BytesIO(data), source=source, encoding=encoding)

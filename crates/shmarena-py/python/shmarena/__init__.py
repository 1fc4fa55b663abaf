"""Share one large read-only dataset between Python processes, read in place from shared memory.

    import shmarena, numpy as np

    with shmarena.build() as b:                  # a sealed memfd; name=... or path=... otherwise
        b.put("lexicon", {"apple": ("fruit", 0.9)})
        b.put_array("centroids", np.random.rand(1000, 64).astype(np.float32))
    arena = b.arena

    arena["lexicon"]["apple"]      # a ListView, read in place
    arena["centroids"]             # a read-only numpy array over the shared mapping

Arenas, views and arrays pickle to small handles; a worker process attaches once, whatever the
start method (fork, forkserver, spawn). See docs/PYTHON.md.
"""

from __future__ import annotations

import atexit
import collections.abc as _abc

import numpy as _np

from . import _native
from ._array import SharedArray, _restore_view  # noqa: F401 - pickles of array views name it
from ._json import to_json_default
from ._native import (
    MAX_DEPTH,
    Arena,
    BadHandleError,
    Builder,
    ListView,
    MapView,
    ShmarenaError,
    StaleHandleError,
    WrongThreadError,
    WrongProcessError,
    build,
    open,
    remove,
)
from ._native import (  # the arena service and image files (service.rs)
    AlreadyPublishedError,
    NotPublishedError,
    Publisher,
    RefusedError,
    ServiceError,
    Subscription,
    _publish,
    connect,
    load,
    subscribe,
)

__all__ = [
    "Arena",
    "BadHandleError",
    "Builder",
    "ListView",
    "MAX_DEPTH",
    "MapView",
    "SharedArray",
    "ShmarenaError",
    "StaleHandleError",
    "WrongThreadError",
    "WrongProcessError",
    "attached_count",
    "attached_ids",
    "build",
    "remove",
    "to_json_default",
    # the arena service and image files
    "AlreadyPublishedError",
    "NotPublishedError",
    "Publisher",
    "RefusedError",
    "ServiceError",
    "Subscription",
    "connect",
    "load",
    "subscribe",
]  # `open` is left out so that `from shmarena import *` does not shadow the builtin

_abc.Mapping.register(MapView)
_abc.Mapping.register(Arena)
_abc.Sequence.register(ListView)

# numpy dtype kinds stored as raw bytes: bool, ints, uints, floats, complex, datetimes,
# timedeltas, fixed-width bytes and unicode strings. Object and structured dtypes are refused.
_KINDS = frozenset("biufcmMSU")


def _make_array(buffer: object, dtype: str, shape: tuple[int, ...], handle: bytes) -> SharedArray:
    """Called from Rust: a read-only array over ``buffer`` (an ArenaBuffer)."""
    dt = _np.dtype(dtype)
    if dt.hasobject or dt.kind not in _KINDS:
        raise ShmarenaError(f"the arena records dtype {dtype!r}, which shmarena never stores")
    flat = _np.frombuffer(buffer, dtype=dt)  # type: ignore[call-overload]
    arr = flat.reshape(shape).view(SharedArray)
    arr._shmarena_handle = handle
    return arr


def _prepare_array(array: _np.ndarray) -> tuple[str, tuple[int, ...], memoryview]:
    """Called from Rust: checks the dtype and gives (dtype.str, shape, bytes in C order)."""
    dt = array.dtype
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None or dt.kind not in _KINDS:
        raise TypeError(
            f"numpy dtype {dt} cannot be stored (shmarena stores bool, integer, float, complex, "
            "datetime, timedelta and fixed-width string dtypes)"
        )
    if not dt.isnative:
        array = array.astype(dt.newbyteorder("="))
    shape = tuple(int(d) for d in array.shape)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    flat = array.reshape(-1).view(_np.uint8)
    return array.dtype.str, shape, memoryview(flat)  # type: ignore[arg-type]


def _copy_array(array: _np.ndarray) -> _np.ndarray:
    """Called from Rust by ``to_python``: a writable copy as a plain ``numpy.ndarray``."""
    return _np.array(array, subok=False)


def _restore(handle: bytes) -> object:
    """Unpickles an arena or view: attaches through the per-process cache."""
    return _native._restore(handle)


def attached_count() -> int:
    """Number of arenas this process has attached (or built) and keeps in its cache."""
    return _native._attached_count()


def attached_ids() -> list[str]:
    """Ids of the arenas in this process's attach cache (sorted)."""
    return _native._attached_ids()


atexit.register(_native._close_owned)

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

from . import _native
from ._json import to_json_default
from ._native import (
    MAX_DEPTH,
    Arena,
    BadHandleError,
    Builder,
    CorruptedError,
    FormatError,
    IncompatibleError,
    ListView,
    MapView,
    NotAnArenaError,
    ShmarenaError,
    StaleHandleError,
    StillBuildingError,
    TruncatedError,
    WrongThreadError,
    WrongProcessError,
    build,
    open,
    remove,
    trust_pickled_rows,
)
from ._native import (  # the arena service and image files (service.rs)
    AlreadyPublishedError,
    NotPublishedError,
    Publisher,
    RefusedError,
    ServiceError,
    Subscription,
    connect,
    load,
    subscribe,
)

__version__: str = _native.__version__  # the Cargo crate's version, as in the wheel's metadata

__all__ = [
    "Arena",
    "BadHandleError",
    "Builder",
    "CorruptedError",
    "FormatError",
    "IncompatibleError",
    "ListView",
    "MAX_DEPTH",
    "MapView",
    "NotAnArenaError",
    "SharedArray",
    "ShmarenaError",
    "StaleHandleError",
    "StillBuildingError",
    "TruncatedError",
    "TypeMismatchError",
    "WrongThreadError",
    "WrongProcessError",
    "attached_count",
    "attached_ids",
    "build",
    "remove",
    "to_json_default",
    "trust_pickled_rows",
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

TYPE_CHECKING = False  # `typing` is not imported at run time either
if TYPE_CHECKING:
    from typing import Any

    from ._array import SharedArray, _restore_view  # noqa: F401

# What needs numpy lives in `_array` and is imported on first use, so that `import shmarena`
# does not import numpy: a worker that only reads dicts and lists starts without it (numpy's
# import is most of a spawned worker's start). `shmarena._restore_view` is what pickles of
# array views name; the other three are called from the native code, as are the view helpers
# of `_views` (reprs, `to_pandas`).
_LAZY = {
    "SharedArray": ("_array", "SharedArray"),
    "_restore_view": ("_array", "_restore_view"),
    "_make_array": ("_array", "_make_array"),
    "_prepare_array": ("_array", "_prepare_array"),
    "_copy_array": ("_array", "_copy_array"),
    "_view_repr": ("_views", "view_repr"),
    "_view_repr_html": ("_views", "view_repr_html"),
    "_view_repr_pretty": ("_views", "view_repr_pretty"),
    "_to_pandas": ("_views", "to_pandas"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shmarena' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))



class TypeMismatchError(ShmarenaError, TypeError):
    """An entry holds another type than the read asks for: an archived entry that the Python
    bindings did not write (another fingerprint, docs/VALUES.md), or elements with no numpy
    dtype. Not damage: the entry is sound, of another type. Also a ``TypeError``."""


_abc.Mapping.register(MapView)
_abc.Mapping.register(Arena)
_abc.Sequence.register(ListView)

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

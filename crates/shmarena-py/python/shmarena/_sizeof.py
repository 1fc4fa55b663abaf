"""``dask.sizeof`` for shmarena objects: what a view, an arena or a shared array costs a Dask
worker is its pickled handle, not the arena's bytes (which the host holds once, in shared
memory). Registered when ``shmarena.dask`` is imported, and through the ``dask.sizeof`` entry
point (``pyproject.toml``) wherever dask and shmarena are both installed."""

from __future__ import annotations

import pickle
import sys
from typing import Any

__all__ = ["pickled_size", "register", "register_dask"]


def pickled_size(obj: Any) -> int:
    """The size of ``obj``'s pickle, plus the object header Dask counts for every object."""
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)) + sys.getsizeof(object())


def _shared_array_size(arr: Any) -> int:
    # A SharedArray over the arena pickles to a handle; one computed from it (a copy) owns its data.
    if arr._shmarena_handle is None and arr._shmarena_root is None:
        return int(arr.nbytes) + sys.getsizeof(object())
    return pickled_size(arr)


def register(sizeof: Any) -> None:
    """Registers shmarena's types with ``sizeof`` (a ``dask.utils.Dispatch``): the entry point."""
    from ._native import Arena, ListView, MapView

    for cls in (Arena, MapView, ListView):
        sizeof.register(cls)(pickled_size)

    def _register_array() -> None:
        from ._array import SharedArray

        sizeof.register(SharedArray)(_shared_array_size)

    if "shmarena._array" in sys.modules:
        _register_array()
    else:
        # SharedArray's module imports numpy: registered when dask first meets a shmarena type
        # it does not know (a SharedArray, whose module is shmarena._array).
        sizeof.register_lazy("shmarena")(_register_array)


def register_dask() -> None:
    """Registers with ``dask.sizeof.sizeof`` if dask is installed."""
    try:
        from dask.sizeof import sizeof
    except ImportError:
        return
    register(sizeof)

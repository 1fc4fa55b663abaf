"""PyTorch datasets whose data every DataLoader worker, and every rank on a node, reads in place.

    import shmarena.torch

    dataset = shmarena.torch.share(MyDataset(...))      # an existing Dataset, unchanged class
    loader = DataLoader(dataset, num_workers=8, multiprocessing_context="spawn")

``share`` moves a Dataset's large attributes (lists, tuples and dicts of at least
``MIN_ITEMS`` items, numpy arrays of at least ``MIN_BYTES`` bytes) into one arena and returns a
Dataset of the same class (a subclass made on the fly) whose methods read them from shared
memory: a worker's memory does not grow as it reads (no reference counts written into shared
pages under ``fork``), and a ``spawn`` or ``forkserver`` worker receives a pickle of a few
hundred bytes instead of the data. With ``name=``, the first process on the node builds (or
calls the factory given) and publishes; the other ranks connect to the same pages.

``Dataset(arena, entries)`` is a map-style dataset over arena entries (a list of records, numpy
arrays); its ``__getitems__`` gathers a batch's array rows into one fresh writable array.

Arrays never reach ``default_collate`` read-only: samples carry writable copies of what they
need (``writable``), so torch neither warns ("The given NumPy array is not writable") nor writes
shared memory. See docs/TORCH.md.

torch is imported on first use of ``Dataset`` only: ``share``, ``node_arena`` and ``writable``
work without it.
"""

from __future__ import annotations

import collections.abc as _abc
import pickle
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from . import _node
from ._native import Arena, ListView, MapView, Publisher, build

if TYPE_CHECKING:
    from ._torch_dataset import Dataset as Dataset

__all__ = [
    "Dataset",
    "MIN_BYTES",
    "MIN_ITEMS",
    "SharedDict",
    "SharedList",
    "node_arena",
    "share",
    "writable",
]

#: ``share`` moves lists, tuples and dicts with at least this many items...
MIN_ITEMS = 1000
#: ...and numpy arrays of at least this many bytes.
MIN_BYTES = 64 * 1024

# Entry names in arenas that `share` builds.
_ATTR = "shmarena.torch/attr/"
_SKELETON = "shmarena.torch/dataset"


def __getattr__(name: str) -> Any:
    if name == "Dataset":  # the torch.utils.data.Dataset subclass: imports torch
        from ._torch_dataset import Dataset

        globals()["Dataset"] = Dataset
        return Dataset
    raise AttributeError(f"module 'shmarena.torch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Dataset"})


# ---------------------------------------------------------------- samples


def plain(value: Any) -> Any:
    """``value`` with a view of a stored dict, list or tuple replaced by a full copy."""
    t = type(value)
    if t is MapView or t is ListView:
        return value.to_python()
    return value


# Types `writable` returns at once (no array can hide in them).
_LEAVES = frozenset({int, float, str, bytes, bool, complex, type(None)})


def writable(sample: Any) -> Any:
    """``sample`` with every read-only numpy array in it (at any depth of tuples, lists and
    dicts) replaced by a writable copy, so that ``torch.as_tensor`` and ``default_collate`` take
    it without warning and nothing can write the shared pages. Writable arrays, numpy scalars
    and everything else are returned as they are; a container is copied only if something in
    it was replaced."""
    t = type(sample)
    if t in _LEAVES:
        return sample
    if t is list or t is tuple:
        out = None
        for k, x in enumerate(sample):
            if type(x) in _LEAVES:
                continue
            y = writable(x)
            if y is not x:
                if out is None:
                    out = list(sample)
                out[k] = y
        if out is None:
            return sample
        return out if t is list else tuple(out)
    if t is dict:
        changed = None
        for k, x in sample.items():
            if type(x) in _LEAVES:
                continue
            y = writable(x)
            if y is not x:
                if changed is None:
                    changed = dict(sample)
                changed[k] = y
        return sample if changed is None else changed
    np = sys.modules.get("numpy")  # no numpy imported: no array to copy
    if np is not None and isinstance(sample, np.ndarray) and not sample.flags.writeable:
        return np.array(sample, subok=False)
    return sample


class SharedList(_abc.Sequence):  # type: ignore[type-arg]
    """A read-only sequence over a stored list or tuple whose items come out as plain Python
    values (a dict, list or tuple item is copied on access, so the caller may change it).
    Slicing gives another ``SharedList`` without copying. Pickles to the view's handle."""

    __slots__ = ("view",)

    def __init__(self, view: ListView):
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: Any) -> Any:
        x = self.view[index]
        t = type(x)
        if t is ListView:
            return SharedList(x) if type(index) is slice else x.to_python()
        if t is MapView:
            return x.to_python()
        return x

    def __iter__(self) -> Iterator[Any]:
        for x in self.view:
            yield plain(x)

    def __eq__(self, other: object) -> bool:
        return self.view == (other.view if isinstance(other, SharedList) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SharedList({len(self.view)} items)"

    def __reduce__(self) -> Any:
        return (SharedList, (self.view,))


class SharedDict(_abc.Mapping):  # type: ignore[type-arg]
    """A read-only mapping over a stored dict whose values come out as plain Python values
    (a dict, list or tuple value is copied on access). Pickles to the view's handle."""

    __slots__ = ("view",)

    def __init__(self, view: MapView):
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key: Any) -> Any:
        return plain(self.view[key])

    def __contains__(self, key: object) -> bool:
        return key in self.view

    def __iter__(self) -> Iterator[Any]:
        return iter(self.view)

    def __eq__(self, other: object) -> bool:
        return self.view == (other.view if isinstance(other, SharedDict) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SharedDict({len(self.view)} items)"

    def __reduce__(self) -> Any:
        return (SharedDict, (self.view,))


# ---------------------------------------------------------------- one arena per node

_publishers: dict[str, Publisher] = {}
_publishers_lock = threading.Lock()


def node_arena(
    name: str,
    *,
    build: Callable[[], Arena] | None = None,
    path: Any = None,
    wait: float = _node.DEFAULT_WAIT,
) -> Arena:
    """The arena published on this node as ``name``: the first process to ask (an exclusive
    per-host lock, the one ``shmarena.dask`` uses) loads the image at ``path`` or calls
    ``build()``, and publishes it for as long as it runs; the others wait up to ``wait``
    seconds and connect to the same pages. Under ``torchrun``, every rank calls it the same way.
    ``SHMARENA_HOST_ID`` in the environment scopes the name (``NAME.HOST``)."""
    published = _node.published_name(name)
    arena, publisher = _node.ensure_published(
        published, lambda: _node.load_or_build(path, build), wait=wait
    )
    if publisher is not None:
        with _publishers_lock:
            _publishers[published] = publisher
    return arena


# ---------------------------------------------------------------- share()


def _is_large(value: Any) -> bool:
    if type(value) in (list, tuple, dict):
        return len(value) >= MIN_ITEMS
    if _is_ndarray(value):
        return value.dtype.kind in "biufcmMSU" and value.nbytes >= MIN_BYTES
    return False


def _is_ndarray(value: Any) -> bool:
    # Without importing numpy: an ndarray's type is numpy.ndarray or a subclass of it.
    return any(c.__module__ == "numpy" and c.__name__ == "ndarray" for c in type(value).__mro__)


def _candidates(dataset: Any, attributes: Sequence[str] | None) -> tuple[dict[str, Any], bool]:
    state = _state_of(dataset)
    if attributes is None:
        return {k: v for k, v in state.items() if _is_large(v)}, False
    missing = [a for a in attributes if a not in state]
    if missing:
        raise AttributeError(
            f"{type(dataset).__name__} object has no attribute(s) {missing} in its __dict__"
        )
    return {a: state[a] for a in attributes}, True


def _state_of(dataset: Any) -> dict[str, Any]:
    state = getattr(dataset, "__dict__", None)
    if state is None:
        raise TypeError(
            f"share() moves attributes from an object's __dict__; {type(dataset).__name__} has none"
        )
    if isinstance(dataset, _Shared):
        raise TypeError("this dataset is already shared (shmarena.torch.share returned it)")
    return state


def _build_arena(dataset: Any, attributes: Sequence[str] | None, skeleton: bool) -> Arena:
    moving, explicit = _candidates(dataset, attributes)
    with build() as b:
        moved = []
        for attr, value in moving.items():
            try:
                if _is_ndarray(value):
                    import numpy as np

                    b.put_array(_ATTR + attr, np.asarray(value))
                else:
                    b.put(_ATTR + attr, value)
            except (TypeError, ValueError) as e:
                what = f"{type(dataset).__name__}.{attr}"
                if explicit:
                    raise type(e)(f"{what} cannot be shared: {e}") from e
                warnings.warn(
                    f"shmarena.torch.share: {what} stays a private attribute ({e}); each worker "
                    "gets its own copy. Pass attributes=[...] to choose what to share",
                    stacklevel=3,
                )
                continue
            moved.append(attr)
        if not moved:
            raise ValueError(
                f"{type(dataset).__name__} has no attribute to share (lists, tuples and dicts of "
                f"at least {MIN_ITEMS} items, numpy arrays of at least {MIN_BYTES} bytes); "
                "name them with attributes=[...]"
            )
        if skeleton:
            rest = {k: v for k, v in dataset.__dict__.items() if k not in moved}
            try:
                blob = pickle.dumps((type(dataset), rest, moved), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:
                raise TypeError(
                    f"the other ranks rebuild {type(dataset).__name__} from a pickle of its class "
                    f"and its small attributes, which failed: {e}"
                ) from e
            b.put(_SKELETON, blob)
    return b.arena


def _wrap(value: Any, views: bool) -> Any:
    if views:
        return value
    if isinstance(value, ListView):
        return SharedList(value)
    if isinstance(value, MapView):
        return SharedDict(value)
    return value


def _assemble(
    cls: type, state: dict[str, Any], arena: Arena, moved: Sequence[str], views: bool
) -> Any:
    obj = _make(cls, dict(state))
    for attr in moved:
        obj.__dict__[attr] = _wrap(arena[_ATTR + attr], views)
    return obj


def share(
    dataset: Any,
    *,
    name: str | None = None,
    attributes: Sequence[str] | None = None,
    views: bool = False,
    wait: float = _node.DEFAULT_WAIT,
) -> Any:
    """A Dataset of the same class as ``dataset`` whose large attributes live in one arena.

    Moved are the attributes named in ``attributes``, or by default every list, tuple or dict
    of at least ``MIN_ITEMS`` items and every numpy array of at least ``MIN_BYTES`` bytes in
    ``dataset.__dict__`` (an attribute that cannot be stored is left in place, with a warning
    that names it and why; a named one raises). The result is an instance of a subclass of
    ``type(dataset)`` made once per class: the same methods run, ``isinstance`` holds, and its
    ``__getitem__`` (and ``__getitems__``, if the class has one) returns what the class's does,
    with read-only arrays made writable copies (``writable``). Moved lists and dicts become
    ``SharedList`` / ``SharedDict`` (items come out as plain Python values, copied on access),
    or with ``views=True`` the arena's views themselves (faster, read-only); arrays become
    read-only ``shmarena.SharedArray``. ``dataset`` itself is left unchanged.

    With ``name=``, one copy per node: ``dataset`` may then be a zero-argument callable that
    makes the Dataset (a class, a ``functools.partial``); the first process on the node (see
    ``node_arena``) calls it, shares the result and publishes it under ``name``; the others
    connect and rebuild the Dataset from the arena without calling it (its class and small
    attributes travel as a pickle inside the arena, accepted only from a publisher of this
    user). The publishing process serves the name until it exits.

    The result pickles to its class, its small attributes and handles of a few dozen bytes,
    under every start method.
    """
    if name is None:
        if callable(dataset) and not hasattr(dataset, "__getitem__"):
            raise TypeError("a factory needs name= (per-node sharing); pass the Dataset itself")
        arena = _build_arena(dataset, attributes, skeleton=False)
        moved = [k[len(_ATTR) :] for k in arena if k.startswith(_ATTR)]
        return _assemble(type(dataset), _state_of(dataset), arena, moved, views)

    def make() -> Arena:
        ds = dataset() if callable(dataset) and not hasattr(dataset, "__getitem__") else dataset
        return _build_arena(ds, attributes, skeleton=True)

    arena = node_arena(name, build=make, wait=wait)
    return from_arena(arena, views=views)


def from_arena(arena: Arena, *, views: bool = False) -> Any:
    """The Dataset that ``share(..., name=...)`` stored in ``arena`` (for processes that
    reach the arena another way, e.g. ``shmarena.connect``)."""
    if _SKELETON not in arena:
        raise ValueError(f"arena {arena.id} holds no dataset made by shmarena.torch.share(name=...)")
    cls, state, moved = pickle.loads(arena[_SKELETON])
    return _assemble(cls, state, arena, moved, views)


# ---------------------------------------------------------------- the shared subclass


class _Shared:
    """Mixed into the subclass ``share`` makes of a Dataset class."""

    __slots__ = ()
    _shmarena_base: type

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_make, (self._shmarena_base, self.__dict__))


_classes: dict[type, type] = {}
_classes_lock = threading.Lock()


def _shared_class(cls: type) -> type:
    with _classes_lock:
        sub = _classes.get(cls)
        if sub is not None:
            return sub
        base_getitem = getattr(cls, "__getitem__")

        def __getitem__(self: Any, index: Any) -> Any:
            return writable(base_getitem(self, index))

        ns: dict[str, Any] = {
            "__getitem__": __getitem__,
            "__module__": cls.__module__,
            "__doc__": cls.__doc__,
            "__slots__": (),
            "_shmarena_base": cls,
        }
        base_getitems = getattr(cls, "__getitems__", None)
        if base_getitems is not None:

            def __getitems__(self: Any, indices: Any) -> Any:
                return [writable(s) for s in base_getitems(self, indices)]

            ns["__getitems__"] = __getitems__
        sub = type(cls.__name__, (_Shared, cls), ns)
        sub.__qualname__ = f"{cls.__qualname__}(shared)"
        _classes[cls] = sub
        return sub


def _make(cls: type, state: Mapping[str, Any]) -> Any:
    """An instance of ``cls``'s shared subclass with ``state`` as its ``__dict__`` (what a
    shared Dataset unpickles to; ``__init__`` is not called)."""
    sub = _shared_class(cls)
    obj: Any = object.__new__(sub)
    obj.__dict__.update(state)
    return obj

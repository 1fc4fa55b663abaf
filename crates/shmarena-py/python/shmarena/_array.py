"""``SharedArray``: the numpy array type of arrays read from an arena.

What stays a ``SharedArray`` is what still reads the arena's pages: the array ``arena[...]``
returned and views of it (basic slices, transposes, ``.real``, reshapes that need no copy).
Everything computed from one is an ordinary ``numpy.ndarray``, and reductions give numpy
scalars, the way ``numpy.memmap`` behaves (``__array_wrap__``, ``__array_function__`` and the
array-making methods below).

Pickling: the array ``arena[...]`` returned pickles to its handle; a view of it to that handle
plus the view's byte offset, shape and strides (and dtype when it differs), and is rebuilt in
place over the same pages in the receiver. Nothing of the data is copied either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._native import CorruptedError

__all__ = ["SharedArray"]

# ndarray methods that make a new array (or a tuple of them) instead of a view: their results
# are turned into plain arrays when they do not read the arena's pages.
_MAKERS = (
    "__copy__",
    "__deepcopy__",
    "argpartition",
    "argsort",
    "astype",
    "byteswap",
    "choose",
    "compress",
    "copy",
    "cumprod",
    "cumsum",
    "diagonal",
    "dot",
    "flatten",
    "nonzero",
    "ravel",
    "repeat",
    "reshape",
    "round",
    "searchsorted",
    "squeeze",
    "swapaxes",
    "take",
    "trace",
    "transpose",
)


class SharedArray(np.ndarray):
    """A read-only numpy array over an arena's shared mapping.

    It behaves as a plain ``numpy.ndarray``. Views of it (slices, transposes) are
    ``SharedArray``\\ s too and pickle as a handle plus their place in the arena; everything
    computed from it (``a + 1``, ``a @ q``, ``np.argsort(a)``, fancy indexing, copies) is a
    plain ``numpy.ndarray``, and reductions (``a.mean()``, ``a.sum()``) give numpy scalars.
    """

    # The handle of the entry this array is (set by `_make_array`); `None` on views.
    _shmarena_handle: bytes | None = None
    # The array with the handle whose pages this view reads, or `None` when it reads none.
    _shmarena_root: SharedArray | None = None

    def __array_finalize__(self, obj: object) -> None:
        # A view keeps the root it reads from; a new array (a copy, a ufunc's output) has none.
        self._shmarena_handle = None
        root = None
        if isinstance(obj, SharedArray):
            root = obj if obj._shmarena_handle is not None else obj._shmarena_root
        if root is not None and not np.may_share_memory(self, root):
            root = None
        self._shmarena_root = root

    def __array_wrap__(
        self, arr: np.ndarray, context: Any = None, return_scalar: bool = False
    ) -> Any:
        # Called with ufunc results (a + 1, a @ q, a.sum()): never the arena's pages.
        if return_scalar or arr.ndim == 0:
            return arr[()]
        return _plain(arr)

    def __array_function__(
        self, func: Any, types: Any, args: Any, kwargs: Any
    ) -> Any:
        return _plain(super().__array_function__(func, types, args, kwargs))

    def __getitem__(self, index: Any) -> Any:
        # Basic slices are views (kept); fancy indexing copies (made plain).
        return _plain(super().__getitem__(index))

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._shmarena_handle is not None:
            from . import _restore  # `shmarena._restore`: the name every handle pickles with

            return (_restore, (self._shmarena_handle,))
        root = self._shmarena_root
        if root is not None and root._shmarena_handle is not None:
            offset = (
                self.__array_interface__["data"][0] - root.__array_interface__["data"][0]
            )
            dtype: Any = None
            if self.dtype != root.dtype:
                dtype = self.dtype.str if np.dtype(self.dtype.str) == self.dtype else self.dtype
            return (
                _restore_view,
                (root._shmarena_handle, offset, self.shape, self.strides, dtype),
            )
        return np.asarray(self).view(np.ndarray).__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)


def _plain(x: Any) -> Any:
    """A ``SharedArray`` that does not read the arena's pages as a plain ``numpy.ndarray``
    (tuples and lists of results converted item by item); anything else unchanged."""
    if isinstance(x, SharedArray):
        if x._shmarena_root is None and x._shmarena_handle is None:
            return x.view(np.ndarray)
        return x
    if type(x) is tuple:
        return tuple(_plain(y) for y in x)
    if type(x) is list:
        return [_plain(y) for y in x]
    return x


def _plain_method(name: str) -> Callable[..., Any]:
    method = getattr(np.ndarray, name)

    def wrapper(self: SharedArray, *args: Any, **kwargs: Any) -> Any:
        return _plain(method(self, *args, **kwargs))

    wrapper.__name__ = name
    wrapper.__qualname__ = f"SharedArray.{name}"
    wrapper.__doc__ = method.__doc__
    return wrapper


for _name in _MAKERS:
    if hasattr(np.ndarray, _name):
        setattr(SharedArray, _name, _plain_method(_name))
del _name


def _restore_view(
    handle: bytes,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: Any,
) -> SharedArray:
    """Unpickles a view of a shared array: the same bytes of the same arena, mapped here."""
    from . import _native

    root = _native._restore(handle)
    if not isinstance(root, SharedArray) or not root.flags.c_contiguous:
        raise TypeError("a pickled shared-array view names something that is not a shared array")
    # The root's bytes (it is C-contiguous, so these are views, not copies); numpy checks that
    # offset, shape and strides stay inside them.
    raw = root.view(np.ndarray).reshape(-1).view(np.uint8)
    dt = root.dtype if dtype is None else np.dtype(dtype)
    if dt.hasobject:
        raise TypeError("a pickled shared-array view asks for an object dtype")
    view = np.ndarray(
        shape,
        dtype=dt,
        buffer=raw,
        offset=offset,
        strides=strides,
    )
    out = view.view(SharedArray)
    out._shmarena_root = root
    return out


# Pickles name it `shmarena._restore_view` (shorter, and stable if this module moves).
_restore_view.__module__ = "shmarena"


# numpy dtype kinds stored as raw bytes: bool, ints, uints, floats, complex, datetimes,
# timedeltas, fixed-width bytes and unicode strings. Object and structured dtypes are refused.
_KINDS = frozenset("biufcmMSU")
# Read, also: opaque elements (`V<n>`) of a Rust-written pod entry (docs/FORMAT.md, prim 0).
_READ_KINDS = _KINDS | {"V"}


def _make_array(buffer: object, dtype: str, shape: tuple[int, ...], handle: bytes) -> SharedArray:
    """Called from Rust: a read-only array over ``buffer`` (an ArenaBuffer). The caller checked
    the dtype string, the shape and the data's length (docs/VALUES.md, "Arrays"); numpy's own
    refusals are turned into ``CorruptedError`` all the same, never a ``ValueError``."""
    try:
        dt = np.dtype(dtype)
        if dt.hasobject or dt.fields is not None or dt.kind not in _READ_KINDS:
            raise ValueError("a dtype shmarena never stores")
        if dt.itemsize == 0:  # an opaque element of 0 bytes: numpy's frombuffer refuses those
            flat = np.ndarray(shape, dtype=dt, buffer=buffer)  # type: ignore[call-overload]
            arr = flat.view(SharedArray)
        else:
            flat = np.frombuffer(buffer, dtype=dt)  # type: ignore[call-overload]
            arr = flat.reshape(shape).view(SharedArray)
    except (TypeError, ValueError, SyntaxError) as e:
        raise CorruptedError(
            f"the arena records an array of dtype {dtype!r} and shape {shape} that numpy "
            f"cannot build over its {memoryview(buffer).nbytes} bytes: {e}"  # type: ignore[arg-type]
        ) from None
    arr._shmarena_handle = handle
    return arr


def _prepare_array(array: np.ndarray) -> tuple[str, tuple[int, ...], memoryview]:
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
    flat = array.reshape(-1).view(np.uint8)
    return array.dtype.str, shape, memoryview(flat)  # type: ignore[arg-type]


def _copy_array(array: np.ndarray) -> np.ndarray:
    """Called from Rust by ``to_python``: a writable copy as a plain ``numpy.ndarray``."""
    return np.array(array, subok=False)

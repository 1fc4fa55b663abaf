"""What the native views call back into: their reprs (a short preview of the contents, as
``dict``, ``list`` and numpy show theirs, plus the notebook forms ``_repr_html_`` and
``_repr_pretty_``) and ``to_pandas``. Reading a preview touches only the items shown."""

from __future__ import annotations

import html
from typing import Any

from ._native import ListView, MapView

#: How many items a preview shows at the top level, and inside nested containers.
TOP_ITEMS = 8
NESTED_ITEMS = 4
#: How deep a preview goes into nested containers, and how long a string it shows whole.
DEPTH = 2
STR_CHARS = 40


def _short(obj: Any, depth: int) -> str:
    """A repr of ``obj`` at most a few dozen characters long for nested values."""
    if isinstance(obj, MapView):
        return _map_body(obj, depth, NESTED_ITEMS)
    if isinstance(obj, ListView):
        return _list_body(obj, depth, NESTED_ITEMS)
    if isinstance(obj, str) and len(obj) > STR_CHARS:
        return repr(obj[:STR_CHARS]) + "..."
    if isinstance(obj, bytes) and len(obj) > STR_CHARS:
        return repr(obj[:STR_CHARS]) + "..."
    if type(obj).__name__ == "SharedArray":
        return f"array(shape={obj.shape}, dtype={obj.dtype})"
    return repr(obj)


def _map_body(view: MapView, depth: int, limit: int) -> str:
    n = len(view)
    if depth <= 0:
        return "{...}" if n else "{}"
    parts = []
    for i, (k, v) in enumerate(view.iter_items()):
        if i == limit:
            parts.append("...")
            break
        parts.append(f"{_short(k, depth - 1)}: {_short(v, depth - 1)}")
    return "{" + ", ".join(parts) + "}"


def _list_body(view: ListView, depth: int, limit: int) -> str:
    n = len(view)
    open_, close = ("(", ")") if view.is_tuple else ("[", "]")
    if depth <= 0:
        return f"{open_}...{close}" if n else f"{open_}{close}"
    parts = [_short(view[i], depth - 1) for i in range(min(n, limit))]
    if n > limit:
        parts.append("...")
    if view.is_tuple and n == 1:
        parts[0] += ","
    return open_ + ", ".join(parts) + close


def _what(view: MapView | ListView) -> str:
    n = len(view)
    if isinstance(view, MapView):
        return f"{n} key" + ("" if n == 1 else "s")
    return f"{n} item" + ("" if n == 1 else "s")


def view_repr(view: MapView | ListView) -> str:
    """``MapView({'apple': ('fruit', 0.9), ...}, 1000 keys)``: the first items, the size."""
    kind = type(view).__name__
    body = _map_body(view, DEPTH, TOP_ITEMS) if isinstance(view, MapView) else _list_body(view, DEPTH, TOP_ITEMS)
    return f"{kind}({body}, {_what(view)})"


def view_repr_html(view: MapView | ListView) -> str:
    """A small HTML table of the first items, for notebooks."""
    kind = type(view).__name__
    if isinstance(view, MapView):
        rows = []
        for i, (k, v) in enumerate(view.iter_items()):
            if i == TOP_ITEMS:
                break
            rows.append((_short(k, DEPTH - 1), _short(v, DEPTH - 1)))
        head = "<tr><th>key</th><th>value</th></tr>"
    else:
        rows = [(str(i), _short(view[i], DEPTH - 1)) for i in range(min(len(view), TOP_ITEMS))]
        head = "<tr><th>index</th><th>value</th></tr>"
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    more = "<tr><td colspan='2'>...</td></tr>" if len(view) > TOP_ITEMS else ""
    return (
        f"<div><b>shmarena.{kind}</b>, {_what(view)} (read in place)"
        f"<table>{head}{body}{more}</table></div>"
    )


def view_repr_pretty(view: MapView | ListView, p: Any, cycle: bool) -> None:
    """IPython's pretty printer (``_repr_pretty_``): the repr."""
    p.text(view_repr(view))


def _numeric_column(values: Any) -> Any:
    """A numpy array of a column's values: typed when they are all numbers, object otherwise."""
    import numpy as np

    if type(values).__name__ == "SharedArray":
        return values.view(np.ndarray)  # a plain view: its base keeps the mapping alive
    if isinstance(values, ListView):
        n = len(values)
        items = values.to_python()
    else:
        items = list(values)
        n = len(items)
    if n and all(type(x) is bool for x in items):
        return np.array(items, dtype=bool)
    if n and all(type(x) in (int, float) for x in items):
        try:
            return np.array(items, dtype=np.int64 if all(type(x) is int for x in items) else np.float64)
        except OverflowError:
            pass
    out = np.empty(n, dtype=object)
    out[:] = items
    return out


def to_pandas(value: Any, **kwargs: Any) -> Any:
    """A pandas object of a stored value (``view.to_pandas()``, ``arena.to_pandas(name)``).

    - a map of equal-length columns (lists or 1-D arrays) gives a ``DataFrame``; an array
      column is used over the shared pages without a copy where pandas allows (``copy=False``,
      a single numeric block), list columns are converted once (numbers to typed arrays);
    - a map of scalars gives a ``Series`` indexed by the keys; a map of records (maps) gives a
      ``DataFrame`` with one row per key;
    - a list gives a ``Series`` (a list of maps: a ``DataFrame``, one row per item);
    - a 1-D array a ``Series``, a 2-D array a ``DataFrame``, over the shared pages.

    Keyword arguments go to the ``DataFrame``/``Series`` constructor.
    """
    import numpy as np
    import pandas as pd

    if type(value).__name__ == "SharedArray" or isinstance(value, np.ndarray):
        value = value.view(np.ndarray)  # a plain view: its base keeps the mapping alive
        if value.ndim == 1:
            return pd.Series(value, copy=False, **kwargs)
        if value.ndim == 2:
            return pd.DataFrame(value, copy=False, **kwargs)
        raise ValueError(f"to_pandas: a {value.ndim}-D array has no pandas form (1-D or 2-D only)")
    if isinstance(value, MapView):
        items = list(value.iter_items())
        if items and all(isinstance(v, (ListView,)) or type(v).__name__ == "SharedArray" for _, v in items):
            lengths = {len(v) for _, v in items}
            if len(lengths) != 1:
                raise ValueError(
                    f"to_pandas: the columns have different lengths {sorted(lengths)}; "
                    "a DataFrame needs equal lengths"
                )
            for _, v in items:
                if type(v).__name__ == "SharedArray" and v.ndim != 1:
                    raise ValueError(f"to_pandas: a column is a {v.ndim}-D array; columns must be 1-D")
            columns = {k: _numeric_column(v) for k, v in items}
            return pd.DataFrame(columns, copy=False, **kwargs)
        if items and all(isinstance(v, MapView) for _, v in items):
            return pd.DataFrame.from_dict({k: v.to_python() for k, v in items}, orient="index", **kwargs)
        keys = [k for k, _ in items]
        return pd.Series(
            _numeric_column([v.to_python() if isinstance(v, (MapView, ListView)) else v for _, v in items]),
            index=keys,
            **kwargs,
        )
    if isinstance(value, ListView):
        if len(value) and all(isinstance(v, MapView) for v in value):
            return pd.DataFrame([v.to_python() for v in value], **kwargs)
        return pd.Series(_numeric_column(value), **kwargs)
    raise TypeError(f"to_pandas: a stored {type(value).__name__} has no pandas form (a map, list or array)")

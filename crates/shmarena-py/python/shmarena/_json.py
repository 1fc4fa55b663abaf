"""``to_json_default``: lets ``json.dumps`` write views and shared arrays."""

from __future__ import annotations

import sys

from ._native import ListView, MapView

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["to_json_default"]


def to_json_default(obj: Any) -> Any:
    """The ``default=`` for ``json.dumps`` and ``json.dump``: a ``MapView`` becomes a ``dict``,
    a ``ListView`` a ``list``, a numpy array a (nested) ``list`` and a numpy scalar its Python
    value; ``json`` calls it again for views nested inside. Anything else is a ``TypeError``,
    as without it (``bytes`` included: JSON has no bytes).

    >>> json.dumps(arena["lexicon"], default=shmarena.to_json_default)  # doctest: +SKIP
    '{"apple": ["fruit", 0.9]}'
    """
    if isinstance(obj, MapView):
        return dict(obj.iter_items())
    if isinstance(obj, ListView):
        return list(obj)
    # numpy is not imported for this: if it is not loaded, `obj` is no numpy object.
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

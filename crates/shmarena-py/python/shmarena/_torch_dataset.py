"""``shmarena.torch.Dataset``: a map-style torch Dataset over arena entries (imports torch and
numpy; ``shmarena.torch`` imports this module on first use of ``Dataset``)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch.utils.data

from ._native import Arena, ListView
from .torch import plain

__all__ = ["Dataset"]

Entries = Union[str, Sequence[str], Mapping[Any, str]]


class Dataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A map-style Dataset whose samples are the ``i``-th items of arena entries.

    ``entries`` is an entry name (a sample is that entry's item ``i``), a sequence of names
    (a tuple of items) or a mapping of keys to names (a dict of items). Each entry is a stored
    list or tuple (``put``) or an array (``put_array``, item ``i`` being row ``i``); all have
    the same length. List items that are dicts, lists or tuples come out as plain Python
    values (copies; ``views=True`` gives the arena's read-only views instead, which is
    faster); array rows come out as writable copies, never the shared pages.

    ``__getitems__`` (which DataLoader calls with a batch's indices when it exists) gathers
    each array's rows into one fresh writable array per batch (numpy fancy indexing) and gives
    each sample a view of its row, so ``default_collate`` stacks them with no warning and no
    write to shared memory. ``transform``, if given, is applied to each sample.

    Pickles to the arena's and entries' handles (a few hundred bytes) plus ``transform``.
    """

    def __init__(
        self,
        arena: Arena,
        entries: Entries,
        *,
        transform: Callable[[Any], Any] | None = None,
        views: bool = False,
    ):
        if isinstance(entries, str):
            names: list[str] = [entries]
            self._shape: Any = None
        elif isinstance(entries, Mapping):
            names = list(entries.values())
            self._shape = list(entries.keys())
        else:
            names = list(entries)
            self._shape = tuple
        if not names:
            raise ValueError("entries names no arena entry")
        columns = []
        lengths = {}
        for n in names:
            if n not in arena:
                raise KeyError(f"arena {arena.id} has no entry {n!r}")
            col = arena[n]
            if isinstance(col, ListView):
                lengths[n] = len(col)
            elif isinstance(col, np.ndarray) and col.ndim >= 1:
                lengths[n] = col.shape[0]
            else:
                raise TypeError(
                    f"entry {n!r} holds a {type(col).__name__}; a Dataset entry is a list, a tuple "
                    "or an array of at least one dimension"
                )
            columns.append(col)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the entries have different lengths: {lengths}")
        self.arena = arena
        self.entries = entries
        self.transform = transform
        self.views = views
        self._columns = columns
        self._len = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._len

    def _compose(self, items: list[Any]) -> Any:
        if self._shape is None:
            sample = items[0]
        elif self._shape is tuple:
            sample = tuple(items)
        else:
            sample = dict(zip(self._shape, items))
        return sample if self.transform is None else self.transform(sample)

    def _item(self, col: Any, index: int) -> Any:
        if isinstance(col, ListView):
            x = col[index]
            return x if self.views else plain(x)
        row = col[index]
        return np.array(row) if isinstance(row, np.ndarray) else row

    def __getitem__(self, index: int) -> Any:
        return self._compose([self._item(c, index) for c in self._columns])

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The samples at ``indices``, array rows gathered into one writable array per entry."""
        idx = np.asarray(indices, dtype=np.intp)
        per_column: list[Any] = []
        for col in self._columns:
            if isinstance(col, ListView):
                if self.views:
                    per_column.append([col[i] for i in indices])
                else:
                    per_column.append([plain(col[i]) for i in indices])
            else:
                per_column.append(np.asarray(col[idx]))  # a fresh writable copy
        return [self._compose([c[j] for c in per_column]) for j in range(len(indices))]

    def __repr__(self) -> str:
        return f"shmarena.torch.Dataset({self._len} samples, entries={self.entries!r})"


Dataset.__module__ = "shmarena.torch"

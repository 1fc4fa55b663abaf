"""Helpers shared by the test modules."""

from __future__ import annotations

import numpy as np

import shmarena


def build(closing, **values):
    """A memfd arena holding `values` (numpy arrays with ``put_array``, the rest with ``put``),
    closed after the test through the ``closing`` fixture."""
    with shmarena.build() as b:
        for name, v in values.items():
            if isinstance(v, np.ndarray):
                b.put_array(name, v)
            else:
                b.put(name, v)
    closing(b.arena)
    return b.arena

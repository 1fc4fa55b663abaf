"""Nested feature lookups and numpy over one arena, with type annotations: the patterns
docs/PYTHON.md documents, written as a user writes them. CI runs it and checks it with mypy
(crates/shmarena-py/ci.sh), so the stubs must accept them without casts.

Run: python examples/python/features.py
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context

import numpy as np
import numpy.typing as npt

import shmarena

DIM = 16


def build_features(n_users: int = 2_000) -> shmarena.Arena:
    """Per-user features (nested dicts, lists, tuples) and an embedding matrix, in one arena."""
    rng = np.random.default_rng(0)
    users = {
        f"user{i}": {
            "age": 18 + i % 60,
            "tags": ["news", "sport", "music"][: 1 + i % 3],
            "home": (round(52.0 + i / 1000, 3), 13.4),
            "scores": {"click": float(rng.random()), "buy": float(rng.random())},
        }
        for i in range(n_users)
    }
    with shmarena.build() as b:
        b.put("users", users)
        b.put_array("embeddings", rng.random((n_users, DIM), dtype=np.float32))
    return b.arena


def describe(users: Mapping[str, Mapping[str, object]], name: str) -> str:
    """Takes the view as the Mapping it is."""
    user = users[name]
    return f"{name}: {sorted(user)}"


def similar(embeddings: npt.NDArray[np.float32], i: int, k: int = 5) -> list[int]:
    """Shared arrays are numpy arrays; what is computed from them is a plain array."""
    scores = embeddings @ embeddings[i]
    best = np.argsort(scores)[::-1][: k + 1]
    return [int(j) for j in best if j != i][:k]


def buy_score(users: Mapping[str, Mapping[str, Mapping[str, float]]], name: str) -> float:
    """Runs in a worker: `users` arrives as a small handle and is read in place there."""
    return users[name]["scores"]["buy"]


def main() -> None:
    arena = build_features()
    users = arena["users"]
    user = users["user7"]

    age: int = user["age"]
    tags: Sequence[str] = user["tags"]
    lat, lon = user["home"]  # a stored tuple unpacks ...
    by_home = {user["home"]: "user7"}  # ... and is hashable, like the tuple it holds
    assert by_home[(lat, lon)] == "user7"
    assert tags.index("news", 0, len(tags)) == 0 and age == 25
    print(describe(users, "user7"))

    embeddings = arena["embeddings"]
    print("similar to user7:", similar(embeddings, 7))
    centre = embeddings.mean(axis=0)  # a plain ndarray
    mean: float = float(embeddings.mean())  # a numpy scalar
    print(f"mean {mean:.3f}, centre norm {float(np.linalg.norm(centre)):.3f}")
    # A slice pickles as a handle and its place, not its 64 KiB of data.
    print("pickled slice:", len(__import__("pickle").dumps(embeddings[:1000])), "bytes")

    print(json.dumps(user, default=shmarena.to_json_default))
    print("entries:", {name: type(value).__name__ for name, value in arena.items()})

    names = [f"user{i}" for i in range(0, 2_000, 7)]
    with ProcessPoolExecutor(2, mp_context=get_context("forkserver")) as ex:
        total = sum(ex.map(partial(buy_score, users), names, chunksize=50))
    print(f"{len(names)} buy scores read in workers, total {total:.1f}")

    try:
        shmarena.open(name="no-such-arena-here")
    except shmarena.ShmarenaError as e:
        print("as expected:", e)


if __name__ == "__main__":
    main()

"""Batch lookups: `view.get_many(keys)` against a loop of `view.get` and against a `dict`.

Looks up the same random keys (a tenth of them missing) in a map of N `str` keys with `int`
values, four ways, interleaved round by round (A B C D A B C D ...), and prints the median time
per key of each and its ratio to the `view.get` loop measured in the same rounds:

- `[view.get(k) for k in keys]`     the loop a user writes first
- `view.get_many(keys)`             one call, a list
- `view.get_many(keys, -1, as_array=True)`  one call, an int64 numpy array
- `[d.get(k) for k in keys]`        the same loop over a plain `dict` of the same data

    python benches/python/get_many.py [N] [LOOKUPS] [ROUNDS]     # default 1000000 100000 7
"""

from __future__ import annotations

import random
import statistics
import sys
import time

import shmarena


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    data = {f"key-{i}": i for i in range(n)}
    with shmarena.build() as b:
        b.put("m", data)
    view = b.arena["m"]
    rng = random.Random(0)
    keys = [f"key-{rng.randrange(n)}" if rng.random() < 0.9 else f"missing-{i}" for i in range(m)]

    ways = {
        "loop of view.get": lambda: [view.get(k) for k in keys],
        "view.get_many (list)": lambda: view.get_many(keys),
        "view.get_many (as_array)": lambda: view.get_many(keys, -1, as_array=True),
        "loop of dict.get": lambda: [data.get(k) for k in keys],
    }
    expect = [data.get(k) for k in keys]
    assert view.get_many(keys) == expect
    assert view.get_many(keys, -1, as_array=True).tolist() == [-1 if v is None else v for v in expect]
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(rounds):
        for w, f in ways.items():
            t0 = time.perf_counter()
            f()
            times[w].append(time.perf_counter() - t0)
    base = [t for t in times["loop of view.get"]]
    print(f"{m} lookups in a map of {n} keys, {rounds} rounds")
    print("| way | ns per key (median) | min–max | time / loop of view.get (median) |")
    print("|---|---|---|---|")
    for w, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        print(
            f"| {w} | {statistics.median(ts) / m * 1e9:.0f} | {min(ts) / m * 1e9:.0f}–{max(ts) / m * 1e9:.0f} "
            f"| {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()

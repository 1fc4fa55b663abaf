"""The seeds' workloads, one run, every way of getting a big read-only object to Pool workers.

Workloads
- dict:  a dict of N string keys -> int; tasks are chunks of random keys to look up.
- cache: the blog's cache {i: format(i, "b")} of N entries; L random lookups, each turned into a
         numpy bit array as the blog's IntToBitarrayConverter.convert does.

Ways (rows)
- (a) bound:       the object bound to the task with functools.partial (pickled per task)
- (b) fork-global: fork + module global (the baseline every ratio is against)
- (c) initializer: Pool(initializer=...) copies the object once into each worker
- (d) shm-numpy:   multiprocessing.shared_memory holding a numpy array (cache workload only:
                   the dict workload has string keys, which numpy cannot index)
- (s) shmarena:    arena[...] views bound to the task with functools.partial

It reports wall time (median of --repeat runs, A B A B order), its ratio to (b) measured in the
same run, and Pss and Anonymous per worker (medians over the workers) from /proc/PID/smaps_rollup
after the job, while the workers are alive. Anonymous is a worker's own memory; Pss also counts
its share of the arena pages it touched, which are shared. The idle row is the floor both are
compared against. The "task, no data" row is the time floor of the (s) rows: the same spawned
pool and task, with a lookup that fetches nothing (dict: each key hashed and missed in an empty
dict; cache: a list holding one string), so the difference to it is what fetching the data costs.

    python benches/python/compare.py --quick       # N = L = 100k, a few seconds per row
    python benches/python/compare.py               # N = L = 1M, Pool(os.cpu_count())
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import time
from functools import partial
from multiprocessing import shared_memory

import numpy as np

import shmarena

GLOBAL = None  # (b): set before a fork pool starts; (c): set by the initializer


# ---------------------------------------------------------------- tasks


def dict_task(d, keys):
    total = 0
    for k in keys:
        total += d[k]
    return total


def dict_task_global(keys):
    return dict_task(GLOBAL, keys)


def to_bits(bitstring: str) -> np.ndarray:
    return np.frombuffer(bitstring.encode(), "u1") - 48


def cache_task(cache, ints):
    total = 0
    for i in ints:
        total += int(to_bits(cache[i]).sum())
    return total


def cache_task_global(ints):
    return cache_task(GLOBAL, ints)


def init_global(obj):
    global GLOBAL
    GLOBAL = obj


_SHM = {}


def cache_task_shm(name, shape, ints):
    """(d): a uint8 bit matrix in multiprocessing.shared_memory, one row per integer."""
    got = _SHM.get(name)
    if got is None:
        # track=False would keep the resource tracker out on 3.13+; on 3.11 attaching registers.
        shm = shared_memory.SharedMemory(name=name)
        got = _SHM[name] = (shm, np.ndarray(shape, dtype=np.uint8, buffer=shm.buf))
    bits = got[1]
    total = 0
    for i in ints:
        total += int(bits[i].sum())
    return total


def idle_task(chunk):
    return 0


class _Empty(dict):
    """Holds no key: `[]` hashes the key, misses and answers 1 (the dict floor row)."""

    def __missing__(self, key):
        return 1


_ONE = []


def dict_floor_task(keys):
    """(-) the dict task with nothing to fetch: each lookup only hashes the key and misses."""
    return dict_task(_Empty(), keys)


def cache_floor_task(n, ints):
    """(-) the cache task with nothing to fetch: `cache[i]` indexes a list holding one
    20-character string n times (made once per worker), so what is left is the task's own work."""
    if not _ONE:
        _ONE.append([format(999_999, "b")] * n)
    return cache_task(_ONE[0], ints)


def mem_kib(pid: int) -> tuple[int, int]:
    """(Pss, Anonymous) of a process in KiB, from /proc/PID/smaps_rollup. Anonymous is the
    process's own memory (heap, copy-on-write copies); shared arena pages are not in it, while
    Pss counts a share of every shared page the process has touched."""
    got = {"Pss:": -1, "Anonymous:": -1}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key = line.split(maxsplit=1)[0]
            if key in got:
                got[key] = int(line.split()[1])
    return got["Pss:"], got["Anonymous:"]


# ---------------------------------------------------------------- runner


def run(method, workers, fn, chunks, initializer=None, initargs=()):
    ctx = mp.get_context(method)
    t0 = time.perf_counter()
    with ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        total = sum(pool.imap_unordered(fn, chunks, chunksize=1))
        elapsed = time.perf_counter() - t0
        mem = [mem_kib(p.pid) for p in pool._pool]  # workers are idle but alive here
    pss = statistics.median(m[0] for m in mem) / 1024
    anon = statistics.median(m[1] for m in mem) / 1024
    return elapsed, total, pss, anon


def main() -> None:
    ap = argparse.ArgumentParser(description="compare ways to share a read-only object with Pool workers")
    ap.add_argument("--quick", action="store_true", help="N = L = 100k, 2 workers, 1 repeat")
    ap.add_argument("-n", type=int, help="entries")
    ap.add_argument("-l", type=int, help="lookups")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--chunk", type=int, default=2000, help="keys per task")
    ap.add_argument("--skip-bound", action="store_true", help="skip (a), the slow one")
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    lookups = args.l or n
    workers = args.workers or (2 if args.quick else os.cpu_count() or 2)
    repeat = args.repeat or (1 if args.quick else 3)
    rng = random.Random(0)

    lexicon = {f"key{i}": i for i in range(n)}
    keys = [f"key{rng.randrange(n)}" for _ in range(lookups)]
    cache = {i: format(i, "b") for i in range(n)}
    ints = [rng.randrange(n) for _ in range(lookups)]
    key_chunks = [keys[i : i + args.chunk] for i in range(0, lookups, args.chunk)]
    int_chunks = [ints[i : i + args.chunk] for i in range(0, lookups, args.chunk)]

    t0 = time.perf_counter()
    with shmarena.build() as b:
        b.put("lexicon", lexicon)
        b.put("cache", cache)
    arena = b.arena
    build_s = time.perf_counter() - t0

    width = max(1, n.bit_length())
    bits = np.zeros((n, width), dtype=np.uint8)
    for i in range(n):
        s = cache[i]
        bits[i, : len(s)] = np.frombuffer(s.encode(), "u1") - 48
    shm = shared_memory.SharedMemory(create=True, size=bits.nbytes)
    np.ndarray(bits.shape, dtype=np.uint8, buffer=shm.buf)[:] = bits

    print(f"N = {n} entries, L = {lookups} lookups in tasks of {args.chunk}, Pool({workers}), "
          f"median of {repeat}; arena {arena.nbytes / 2**20:.1f} MiB built in {build_s:.2f} s")

    rows = {}

    def plan(workload):
        data, task, glob, chunks = (
            (lexicon, dict_task, dict_task_global, key_chunks)
            if workload == "dict"
            else (cache, cache_task, cache_task_global, int_chunks)
        )
        view = arena[workload if workload == "cache" else "lexicon"]
        p = []
        if not args.skip_bound:
            for m in ("spawn", "forkserver"):
                p.append((f"(a) bound, {m}", m, partial(task, data), chunks, None, ()))
        p.append(("(b) fork-global", "fork", glob, chunks, None, ()))
        for m in ("spawn", "forkserver"):
            p.append((f"(c) initializer, {m}", m, glob, chunks, init_global, (data,)))
        if workload == "cache":
            for m in ("spawn", "forkserver"):
                p.append((f"(d) shm-numpy, {m}", m, partial(cache_task_shm, shm.name, bits.shape), chunks, None, ()))
        for m in ("spawn", "forkserver", "fork"):
            p.append((f"(s) shmarena, {m}", m, partial(task, view), chunks, None, ()))
        # The floor: a worker that imported numpy and shmarena and touched no data.
        p.append(("(-) idle worker, spawn", "spawn", idle_task, chunks, None, ()))
        # The floor of the (s) rows: the same pool and task with a lookup that fetches nothing.
        floor = dict_floor_task if workload == "dict" else partial(cache_floor_task, n)
        p.append(("(-) task, no data, spawn", "spawn", floor, chunks, None, ()))
        return p

    global GLOBAL
    for workload in ("dict", "cache"):
        runs = plan(workload)
        times = {r[0]: [] for r in runs}
        pss = {r[0]: [] for r in runs}
        anon = {r[0]: [] for r in runs}
        totals = set()
        for _ in range(repeat):  # A B A B: every row once per round
            for label, method, fn, chunks, init, initargs in runs:
                GLOBAL = lexicon if workload == "dict" else cache
                t, total, p, a = run(method, workers, fn, chunks, init, initargs)
                GLOBAL = None
                times[label].append(t)
                pss[label].append(p)
                anon[label].append(a)
                if not label.startswith("(-)"):
                    totals.add(total)
        assert len(totals) == 1, f"rows disagree on the result: {totals}"
        base = statistics.median(times["(b) fork-global"])
        print(f"\n{workload} workload                time (s)   vs (b)   Pss/worker (MiB)   Anonymous/worker (MiB)   range (s)")
        for label, *_ in runs:
            t = statistics.median(times[label])
            spread = f"{min(times[label]):.2f}-{max(times[label]):.2f}" if repeat > 1 else ""
            print(
                f"  {label:<26} {t:8.2f}   {t / base:5.2f}x   {statistics.median(pss[label]):8.1f}   "
                f"{statistics.median(anon[label]):8.1f}   {spread}"
            )
        rows[workload] = times

    shm.close()
    shm.unlink()
    arena.close()


if __name__ == "__main__":
    main()

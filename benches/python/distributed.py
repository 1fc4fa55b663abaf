"""The seed workload on Dask and Ray: one read-only dataset, several worker processes.

Dataset: a dict of N string keys -> int and a float32 matrix (N/4 rows x 64 columns: 61 MiB at
N = 1M). Work: L = N lookups in tasks of 2000 keys, spread over the whole dict (each task makes
its keys from its number, so the tasks' arguments stay tiny); each task sums the values it finds
and the matrix rows they name.

Ways (rows)
- Dask, shmarena:  the driver builds the arena from the objects and saves its image; then
                   shmarena.dask.Dataset(path=image): each host's first nanny loads the image
                   into a sealed memfd and publishes it; tasks call shmarena.dask.get().
- Dask, scatter:   client.scatter([obj], broadcast=True), the future passed to every task.
- Dask, graph:     the object in the graph once (dask.delayed(obj)), every task depending on it.
- Ray, shmarena:   build and save as above, then shmarena.ray.Dataset(path=image): a holder
                   actor per node; tasks call get().
- Ray, ray.put:    ref = ray.put(obj), the ref passed to every task.

Every way starts from the same point: the Python objects in the driver and warm, idle workers.
The clock starts before anything is done with the data (for shmarena: before the build and the
save; for the others: before scatter, graph submission or ray.put) and stops at the last result.

Each row runs on a fresh cluster (LocalCluster(processes=True, threads_per_worker=1) or
ray.init(num_cpus=W)) with W workers, for T tasks of 2000 lookups each (--tasks, default 8 and
500). Memory is `Anonymous:` of /proc/PID/smaps_rollup (a process's own memory: shared arena
pages are not in it), over the same worker before the job:
- at rest: each worker's growth, read after the job while the workers are alive;
- in task: each task reads its process's Anonymous at its end, while the data it got is still
  referenced (for ray.put, the dict it deserialized), the peak a task holds; the median and the
  largest growth over the tasks are reported;
- per host: the sum of the workers' growth at rest plus what the host holds once in shared
  memory (the arena for shmarena rows; for ray.put, the serialized object in Ray's object store,
  taken as its pickled size).

    python benches/python/distributed.py --quick     # N = 100k
    python benches/python/distributed.py             # N = 1M, 8 and 500 tasks, 2 and 4 workers
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# This file is named distributed.py: run as a script, its directory would shadow the
# `distributed` package (Dask's) for this process and for the workers it spawns.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np  # noqa: E402

import shmarena  # noqa: E402

COLS = 64
CHUNK = 2000
NAME = f"bench-dist-{os.getpid()}"


# ---------------------------------------------------------------- data and tasks


def make_data(n: int):
    d = {f"k{i:07d}": i for i in range(n)}
    m = (np.arange((n // 4) * COLS, dtype=np.float32) % 97).reshape(n // 4, COLS)
    return d, m


def keys_of(task: int, n: int) -> list[str]:
    """The keys task number `task` looks up: made in the task (so the task's arguments are two
    integers and no engine keeps key lists around), spread over the whole dict (7919 is prime
    and does not divide n = 10^k, so i -> 7919 i mod n is a permutation)."""
    return [f"k{(task * CHUNK + j) * 7919 % n:07d}" for j in range(CHUNK)]


def work(d, m, task: int) -> float:
    keys = keys_of(task, len(d))
    total = 0
    rows = []
    nrows = m.shape[0]
    for k in keys:
        v = d[k]
        total += v
        rows.append(v % nrows)
    return total + float(m[np.asarray(rows)].sum(dtype=np.float64))


def task_obj(obj, task):
    d, m = obj
    r = work(d, m, task)
    return os.getpid(), r, anon_kib()  # the data still referenced: the task's peak


def task_shmarena_dask(name, task):
    import shmarena.dask

    a = shmarena.dask.get(name)
    r = work(a["dict"], a["matrix"], task)
    return os.getpid(), r, anon_kib()


def task_shmarena_ray(name, task):
    import shmarena.ray

    a = shmarena.ray.get(name)
    r = work(a["dict"], a["matrix"], task)
    return os.getpid(), r, anon_kib()


def build_image(obj, image: str) -> None:
    """What the shmarena rows do first, on the clock: build the arena and save its image."""
    d, m = obj
    with shmarena.build() as b:
        b.put("dict", d)
        b.put_array("matrix", m)
    b.arena.save(image)
    b.arena.close()


def anon_kib(pid="self") -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return -1


def expected_total(d, m, chunks) -> float:
    return sum(work(d, m, c) for c in chunks)


# ---------------------------------------------------------------- runners


def dask_run(way: str, workers: int, obj, image: str, chunks):
    import dask
    import distributed

    with distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(workers)
        # Warm each worker (imports) so start-up is not counted, then take its baseline.
        client.run(lambda: __import__("numpy") and __import__("shmarena.dask") and None)
        before = client.run(anon_kib)
        pid_of = client.run(os.getpid)
        t0 = time.perf_counter()
        if way == "shmarena":
            import shmarena.dask

            build_image(obj, image)
            client.register_plugin(shmarena.dask.Dataset(NAME, path=image))
            futures = client.map(task_shmarena_dask, [NAME] * len(chunks), chunks, pure=False)
        elif way == "scatter":
            [fut] = client.scatter([obj], broadcast=True)
            futures = client.map(task_obj, [fut] * len(chunks), chunks, pure=False)
        elif way == "graph":
            o = dask.delayed(obj, traverse=False)
            tasks = [dask.delayed(task_obj, pure=False)(o, c) for c in chunks]
            futures = client.compute(tasks)
        else:
            raise ValueError(way)
        first = None
        results = []
        for f in distributed.as_completed(futures):
            if first is None:
                first = time.perf_counter() - t0
            results.append(f.result())
        wall = time.perf_counter() - t0
        after = client.run(anon_kib)
        growth = [after[w] - before[w] for w in after]
        base = {pid_of[w]: before[w] for w in before}
        in_task = [a - base.get(p, a) for p, _, a in results]
        return wall, first, list(after.values()), growth, in_task, results


def ray_run(way: str, workers: int, obj, image: str, chunks):
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # Start and warm the worker processes, and take their baselines.
        @ray.remote
        def warm(_):
            # What the tasks import (numpy for the matrix; shmarena no longer imports it).
            import numpy  # noqa: F401
            import shmarena.ray  # noqa: F401

            time.sleep(0.2)
            return os.getpid()

        pids = set(ray.get([warm.remote(i) for i in range(workers * 4)]))
        before = {p: anon_kib(p) for p in pids}
        t0 = time.perf_counter()
        ds = None
        if way == "shmarena":
            import shmarena.ray

            build_image(obj, image)
            ds = shmarena.ray.Dataset(NAME, path=image).start()
            task = ray.remote(task_shmarena_ray)
            refs = [task.remote(NAME, c) for c in chunks]
        elif way == "ray.put":
            ref = ray.put(obj)
            task = ray.remote(task_obj)
            refs = [task.remote(ref, c) for c in chunks]
        else:
            raise ValueError(way)
        first = None
        results = []
        pending = refs
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            if first is None:
                first = time.perf_counter() - t0
            results.extend(ray.get(done))
        wall = time.perf_counter() - t0
        used = {pid for pid, _, _ in results}
        after = {p: anon_kib(p) for p in used}
        growth = [after[p] - before.get(p, after[p]) for p in used]
        in_task = [a - before.get(p, a) for p, _, a in results]
        if ds is not None:
            ds.stop()
        return wall, first, list(after.values()), growth, in_task, results
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = L = 100k")
    ap.add_argument("--n", type=int, help="dict entries (default 1M, 100k with --quick)")
    ap.add_argument("--workers", default="2,4", help="worker counts (default 2,4)")
    ap.add_argument("--engines", default="dask,ray", help="dask, ray or both (default)")
    ap.add_argument("--tasks", default="8,500", help="numbers of tasks of 2000 lookups (default 8,500)")
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    counts = [int(w) for w in args.workers.split(",")]
    engines = args.engines.split(",")

    task_counts = [int(t) for t in args.tasks.split(",")]

    t = time.perf_counter()
    d, m = make_data(n)
    with shmarena.build() as b:  # its size, for the per-host figure (the rows build their own)
        b.put("dict", d)
        b.put_array("matrix", m)
    size_mib = b.arena.nbytes / 2**20
    b.arena.close()
    import pickle

    pickled_mib = len(pickle.dumps((d, m), protocol=5)) / 2**20
    tmp = tempfile.mkdtemp(prefix="shmarena-bench-")
    image = os.path.join(tmp, "seed.arena")
    print(
        f"N = {n:,} entries, matrix {m.shape[0]}x{COLS} float32 ({m.nbytes / 2**20:.1f} MiB); "
        f"arena {size_mib:.1f} MiB, pickle {pickled_mib:.1f} MiB (data made in "
        f"{time.perf_counter() - t:.1f} s); {os.cpu_count()} cores",
        flush=True,
    )
    print()
    print(
        "| engine, way | workers | tasks | wall (s) | first result (s) | at rest: growth of each worker (MiB) "
        "| in task: growth, median / max (MiB) | per host: workers' growth + shared (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    plan = []
    if "dask" in engines:
        plan += [("Dask", w, dask_run) for w in ("shmarena", "scatter", "graph")]
    if "ray" in engines:
        plan += [("Ray", w, ray_run) for w in ("shmarena", "ray.put")]
    try:
        for workers in counts:
            for ntasks in task_counts:
                # Task numbers spread over the dict: every task makes its own CHUNK keys.
                chunks = [i * (n // CHUNK) // ntasks for i in range(ntasks)]
                want = expected_total(d, m, chunks)
                for engine, way, run in plan:
                    try:
                        wall, first, anon, growth, in_task, results = run(way, workers, (d, m), image, chunks)
                    except Exception as e:  # noqa: BLE001 - report and go on
                        print(f"| {engine}, {way} | {workers} | {ntasks} | failed: {type(e).__name__}: {e} | | | | |", flush=True)
                        continue
                    finally:
                        if os.path.exists(image):
                            os.unlink(image)
                    got = sum(r for _, r, _ in results)
                    ok = "" if abs(got - want) <= 1e-9 * abs(want) else f" WRONG RESULT {got} != {want}"
                    shared = size_mib if way == "shmarena" else pickled_mib if way == "ray.put" else 0.0
                    print(
                        f"| {engine}, {way} | {workers} | {ntasks} | {wall:.2f} | {first:.2f} | "
                        f"{', '.join(f'{g / 1024:.1f}' for g in sorted(growth))} | "
                        f"{statistics.median(in_task) / 1024:.1f} / {max(in_task) / 1024:.1f} | "
                        f"{sum(growth) / 1024 + shared:.1f} |{ok}",
                        flush=True,
                    )
    finally:
        if os.path.exists(image):
            os.unlink(image)
        os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

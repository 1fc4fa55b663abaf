"""Functions run in worker processes by the tests: importable under every start method."""

from __future__ import annotations

import ctypes
import os
import signal

import numpy as np

import shmarena


def lookup(lexicon, centroids, word):
    """What a worker of the classify scenario does: a dict lookup and a numpy reduction."""
    entry = lexicon.get(word)
    label = None if entry is None else entry[0]
    return word, label, float(np.asarray(centroids).sum())


def whoami(view):
    """(pid, ids of arenas attached in this process, len of the view)."""
    return os.getpid(), shmarena.attached_ids(), len(view)


def sum_array(arr):
    return os.getpid(), shmarena.attached_ids(), float(arr.sum()), arr.flags.writeable


def echo(obj):
    return obj


def to_python(view):
    return view.to_python()


def write_with_ctypes(arr):
    """Writes into the shared array behind numpy's back: must die with SIGSEGV."""
    import faulthandler

    faulthandler.disable()  # pytest's handler would print this expected crash
    ctypes.memmove(arr.ctypes.data, b"\xff" * 8, 8)
    return "survived"


def die_on(view, x):
    """Kills its own worker when asked to, mid-task."""
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x, len(view)


def pickle_handle_and_exit(conn):
    """Builds a memfd arena, sends a pickled view of it, and exits (the handle goes stale)."""
    import pickle

    with shmarena.build() as b:
        b.put("v", {"k": [1, 2, 3]})
    conn.send(pickle.dumps(b.arena["v"]))
    conn.close()


def mapping_of(arr):
    """(permissions, path) of the mapping that holds the array's first byte, in this process."""
    addr = arr.ctypes.data
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields[1], fields[5].strip() if len(fields) > 5 else ""
    return None


def build_send_and_wait(conn, done):
    """Builds an arena in this (child) process, sends a pickled view, and keeps it alive until
    the parent has read it."""
    import pickle

    with shmarena.build() as b:
        b.put("v", {"from": "child", "pid": os.getpid(), "arr": np.arange(5.0)})
    conn.send(pickle.dumps(b.arena["v"]))
    done.wait(60)


def shares_arena_pages(arr):
    """(sum, whether `arr` arrived as a read-only SharedArray over an arena mapping)."""
    perms, path = mapping_of(arr)
    shared = (
        type(arr) is shmarena.SharedArray
        and not arr.flags.writeable
        and perms.startswith("r--")
        and ("memfd:shmarena" in path or path.startswith("/dev/shm/"))
    )
    return int(arr.sum()), shared


def close_publisher(pub):
    """Tries to stop a publisher inherited across fork: must do nothing to the parent's."""
    pub.close()
    del pub
    import gc

    gc.collect()


def anon_kib(pid: int | str = "self") -> int:
    """`Anonymous:` of a process (kB): its private anonymous memory; shared arena pages are not."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    raise RuntimeError("no Anonymous: line in smaps_rollup")


def read_all(lexicon, matrix, words):
    """Looks up `words` in `lexicon` and reduces the whole `matrix`; returns (pid, found,
    matrix sum, growth of this process's anonymous memory in KiB while reading)."""
    import gc

    gc.collect()
    before = anon_kib()
    found = 0
    for w in words:
        if lexicon.get(w) is not None:
            found += 1
    total = 0.0
    for row in range(0, matrix.shape[0], 4096):
        total += float(matrix[row : row + 4096].sum(dtype=np.float64))
    gc.collect()
    return os.getpid(), found, total, anon_kib() - before


def build_small_arena():
    """A build function for the engine plugins: a small dataset, built where it is called."""
    with shmarena.build() as b:
        b.put("lexicon", {f"w{i}": ("fruit" if i % 2 else "veg", i) for i in range(1000)})
        b.put_array("weights", np.arange(64, dtype=np.float32))
    return b.arena


def dataset_lookup(name, word, delay=0.0):
    """A task of the engine plugins: (pid, host id, arena id, value of `word`)."""
    import time

    import shmarena.dask

    arena = shmarena.dask.get(name, wait=60)
    time.sleep(delay)
    return os.getpid(), os.environ.get("SHMARENA_HOST_ID"), arena.id, arena["lexicon"].get(word)


def ray_dataset_lookup(name, word):
    import shmarena.ray

    arena = shmarena.ray.get(name, wait=60)
    return os.getpid(), arena.id, arena["lexicon"].get(word), float(arena["weights"].sum())


def build_big_arena(nbytes=500 * 2**20):
    """A build function for the memory-accounting tests: one float64 array of `nbytes`."""
    with shmarena.build() as b:
        b.put_array("big", np.ones(nbytes // 8, dtype=np.float64))
    return b.arena


def read_every_page(name, heap_bytes=0, hold=0.0):
    """A task that sums the whole arena array `name` (every page), then optionally holds
    `heap_bytes` of private memory for `hold` seconds; returns (pid, sum, VmRSS, the figure
    the worker's memory manager sees, the worker's memory limit)."""
    import time

    import shmarena._memory
    import shmarena.dask
    from distributed import get_worker

    arena = shmarena.dask.get(name, wait=60)
    total = float(arena["big"].sum())
    heap = None
    if heap_bytes:
        heap = np.ones(heap_bytes // 8, dtype=np.float64)  # written: private pages
        time.sleep(hold)
    worker = get_worker()
    seen = worker.monitor.get_process_memory()
    rss = shmarena._memory.status()["VmRSS"]
    del heap
    return os.getpid(), total, rss, seen, worker.memory_manager.memory_limit


def sum_view(arr):
    """A task given a shared array as argument: reads every page (no shmarena.dask involved)."""
    return os.getpid(), float(arr.sum())


def failing_build():
    """A build function that fails, as a corrupt input would."""
    raise ValueError("the input file is corrupt (test)")


def get_and_report(name, wait=60.0):
    """A task: the dataset's entry names, or the error `shmarena.dask.get` raised and its time."""
    import time

    import shmarena.dask

    t0 = time.monotonic()
    try:
        return sorted(shmarena.dask.get(name, wait=wait))
    except shmarena.NotPublishedError as e:
        return ("NotPublishedError", str(e), time.monotonic() - t0)

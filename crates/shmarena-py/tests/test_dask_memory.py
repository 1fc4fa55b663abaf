"""Dask's memory limits and arenas: a worker whose limit is below an arena's size reads every
page of it with no pause, restart or "unmanaged memory" warning (shmarena.dask's accounting);
without that accounting Dask kills it; a worker whose own heap exceeds its limit is still paused
and restarted. Real LocalClusters with nanny processes, a 500 MiB arena, 400 MB limits."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

import shmarena
import shmarena._memory
import workers

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (ci.sh installs it)")
import dask  # noqa: E402
import dask.sizeof  # noqa: E402

import shmarena.dask  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ARENA = 500 * 2**20
LIMIT = 400 * 10**6  # below the arena's size: every worker that reads it all is "over" by RSS
# What Dask writes when it pauses, spills nothing or restarts a worker for its memory.
SIGNS = ("Pausing worker", "Unmanaged memory use is high", "memory budget", "Restarting")


def unique(tag: str) -> str:
    return f"sapy-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def cluster(**kw):
    return distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        memory_limit=LIMIT,
        dashboard_address=None,
        **kw,
    )


def memory_messages(client, caplog) -> list[str]:
    """The log lines that tell of memory trouble: the workers' (read from each worker process,
    again if one is restarting) and the nannies' (which a LocalCluster runs in this process)."""
    out = [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in SIGNS)]
    for attempt in range(20):
        try:
            logs = client.get_worker_logs()
            break
        except (OSError, distributed.comm.CommClosedError):
            time.sleep(0.5)
    else:
        raise AssertionError("could not read the workers' logs")
    for addr, records in logs.items():
        out += [f"{addr}: {msg}" for _, msg in records if any(s in msg for s in SIGNS)]
    return out


def test_process_memory_leaves_out_arena_pages_only():
    with shmarena.build() as b:
        b.put_array("a", np.ones(64 * 2**20 // 8))
    arena = b.arena
    try:
        assert float(arena["a"].sum()) == 64 * 2**20 // 8  # every page is now in this RSS
        st = shmarena._memory.status()
        mine = shmarena._memory.process_memory(fresh=True)
        assert st["VmRSS"] - mine >= 60 * 2**20  # the arena's pages are left out
        assert shmarena._memory.arena_mapped_bytes(fresh=True) >= 64 * 2**20
        heap = np.ones(64 * 2**20 // 8)  # private pages count as before
        grown = shmarena._memory.process_memory(fresh=True) - mine
        assert grown >= 60 * 2**20, grown
        del heap
    finally:
        arena.close()


def test_sizeof_is_the_pickled_handle():
    with shmarena.build() as b:
        b.put_array("a", np.ones(2**20))
        b.put("m", {"k": list(range(10_000))})
    arena = b.arena
    try:
        for obj in (arena, arena["m"], arena["m"]["k"], arena["a"], arena["a"][10:1000]):
            size = dask.sizeof.sizeof(obj)
            assert size < 1000, (type(obj), size)
            assert size >= len(pickle.dumps(obj)), (type(obj), size)
        computed = arena["a"] + 1  # owns its data: counted in full
        assert dask.sizeof.sizeof(computed) >= computed.nbytes
    finally:
        arena.close()


def test_workers_read_an_arena_larger_than_their_limit(caplog):
    name = unique("dm")
    with cluster() as c, distributed.Client(c, timeout=60) as client:
        client.register_plugin(shmarena.dask.Dataset(name, build=workers.build_big_arena))
        pids = set(client.run(os.getpid).values())
        results = client.gather(client.map(workers.read_every_page, [name] * 8, pure=False))
        time.sleep(1.0)  # a few rounds of the worker's and the nanny's memory monitors
        assert {r[1] for r in results} == {ARENA / 8}
        # The premise: by RSS, each worker is above its limit (the nanny restarts at 95%).
        assert all(rss > LIMIT for _, _, rss, _, _ in results), [r[2] for r in results]
        # What the worker's memory manager sees leaves the arena out.
        assert all(seen < 0.6 * limit for _, _, _, seen, limit in results), [r[3] for r in results]
        assert set(client.run(os.getpid).values()) == pids  # nobody restarted
        assert memory_messages(client, caplog) == []
        info = client.scheduler_info()["workers"]
        assert all(w["metrics"]["memory"] < 0.6 * LIMIT for w in info.values())  # unmanaged too


def test_without_the_accounting_dask_kills_the_reader(caplog):
    # The failure the accounting fixes: a shared array passed as a task argument (no
    # shmarena.dask plugin, so nothing changes Dask's figures) kills the worker reading it.
    with shmarena.build() as b:
        b.put_array("big", np.ones(ARENA // 8))
    arena = b.arena
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), cluster() as c, distributed.Client(
            c, timeout=60
        ) as client:
            with pytest.raises(distributed.KilledWorker):
                client.gather(client.map(workers.sum_view, [arena["big"]] * 4, pure=False))
            assert memory_messages(client, caplog), "expected a pause or restart message"
    finally:
        arena.close()


def test_a_worker_over_its_limit_by_its_own_heap_is_still_paused_and_restarted(caplog):
    name = unique("dh")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), cluster() as c, distributed.Client(
        c, timeout=60
    ) as client:
        client.register_plugin(shmarena.dask.Dataset(name, build=workers.build_big_arena))
        base = max(client.run(shmarena._memory.process_memory).values())
        # Heap to about 88% of the limit: above pause (80%), below restart (95%).
        heap = int(0.88 * LIMIT) - base
        pid, *_ = client.submit(workers.read_every_page, name, heap, 2.0, pure=False).result()
        logs = [m for m in memory_messages(client, caplog) if "Pausing worker" in m]
        assert logs, "a worker whose heap is above 80% of its limit was not paused"
        # Heap above the limit: the nanny restarts the worker; the task is lost.
        with pytest.raises(distributed.KilledWorker):
            client.submit(workers.read_every_page, name, LIMIT, 5.0, pure=False).result()
        assert any("memory budget" in m for m in memory_messages(client, caplog))


def test_memory_accounting_alone_covers_arrays_passed_as_arguments(caplog):
    # The same task as above, with shmarena.dask.MemoryAccounting registered and no Dataset.
    with shmarena.build() as b:
        b.put_array("big", np.ones(ARENA // 8))
    arena = b.arena
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), cluster() as c, distributed.Client(
            c, timeout=60
        ) as client:
            client.register_plugin(shmarena.dask.MemoryAccounting())
            pids = set(client.run(os.getpid).values())
            results = client.gather(client.map(workers.sum_view, [arena["big"]] * 4, pure=False))
            time.sleep(1.0)
            assert [s for _, s in results] == [ARENA / 8] * 4
            assert set(client.run(os.getpid).values()) == pids
            assert memory_messages(client, caplog) == []
    finally:
        arena.close()

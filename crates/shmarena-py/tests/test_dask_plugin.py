"""shmarena.dask: one arena per host under a real Dask cluster: two "hosts" on one machine
(SHMARENA_HOST_ID), a worker killed mid-run and restarted by its nanny, and the worker plugin."""

from __future__ import annotations

import os
import signal
import time

import pytest

import shmarena
import workers

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (ci.sh: requirements-test-full.txt)")
import shmarena.dask  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def unique(tag: str) -> str:
    return f"sapy-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def lookups(client, name, worker, n=6):
    futures = [
        client.submit(workers.dataset_lookup, name, f"w{i}", workers=[worker], pure=False, allow_other_workers=False)
        for i in range(n)
    ]
    return client.gather(futures)


def test_two_hosts_each_read_their_own_copy():
    name = unique("dh")
    spec = {
        f"{host}-{i}": {
            "cls": distributed.Nanny,
            "options": {"nthreads": 1, "env": {"SHMARENA_HOST_ID": host}},
        }
        for host, i in [("ha", 0), ("ha", 1), ("hb", 0)]
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard": False}}
    with distributed.SpecCluster(workers=spec, scheduler=scheduler) as cluster, distributed.Client(
        cluster, timeout=60
    ) as client:
        client.wait_for_workers(3, timeout=120)
        client.register_plugin(shmarena.dask.Dataset(name, build=workers.build_small_arena))
        ids = {h: shmarena.connect(f"{name}.{h}").id for h in ("ha", "hb")}
        assert ids["ha"] != ids["hb"]
        seen = {}
        for addr, info in client.scheduler_info()["workers"].items():
            for pid, host, arena_id, value in lookups(client, name, addr):
                assert value is not None
                seen.setdefault(host, set()).add((pid, arena_id))
        assert {h: {a for _, a in s} for h, s in seen.items()} == {"ha": {ids["ha"]}, "hb": {ids["hb"]}}
        assert len({p for p, _ in seen["ha"]}) == 2  # both workers of host "ha" read its copy
    for h in ("ha", "hb"):
        with pytest.raises(shmarena.NotPublishedError):
            shmarena.connect(f"{name}.{h}")


def _wait_for_new_pids(client, old: set[int], n: int, timeout: float = 120) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = set(client.run(os.getpid).values())
        except Exception:  # noqa: BLE001 - a worker mid-restart
            pids = set()
        if len(pids) == n and pids != old:
            return pids
        time.sleep(0.2)
    raise TimeoutError("the nanny did not restart the killed worker")


@pytest.mark.parametrize("plugin", ["nanny", "worker"])
def test_killed_worker_restarts_and_reconnects(plugin):
    name = unique("dk")
    make = shmarena.dask.Dataset if plugin == "nanny" else shmarena.dask.WorkerDataset
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster, timeout=60) as client:
        client.register_plugin(make(name, build=workers.build_small_arena))
        futures = client.map(workers.dataset_lookup, [name] * 8, [f"w{i}" for i in range(8)], pure=False)
        before = client.gather(futures)
        assert [v for *_, v in before] == [("fruit" if i % 2 else "veg", i) for i in range(8)]
        arena_ids = {a for _, _, a, _ in before}
        assert len(arena_ids) == 1
        pids = set(client.run(os.getpid).values())
        victim = sorted(pids)[0]
        # Killed mid-run: tasks are running on both workers; the scheduler reruns the victim's.
        slow = client.map(workers.dataset_lookup, [name] * 6, [f"w{i}" for i in range(6)], [0.5] * 6, pure=False)
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        assert [v for *_, v in client.gather(slow)] == [("fruit" if i % 2 else "veg", i) for i in range(6)]
        new_pids = _wait_for_new_pids(client, pids, 2)
        assert victim not in new_pids
        futures = client.map(workers.dataset_lookup, [name] * 8, [f"w{i}" for i in range(8, 16)], pure=False)
        after = client.gather(futures)
        assert [v for *_, v in after] == [("fruit" if i % 2 else "veg", i) for i in range(8, 16)]
        if plugin == "nanny":
            # The nanny kept publishing: the restarted worker reads the very same arena.
            assert {a for _, _, a, _ in after} == arena_ids
        # Every worker still reads through the name (republished by a worker if it was the victim).
        assert shmarena.connect(name)["lexicon"]["w3"] == ("fruit", 3)
    with pytest.raises(shmarena.NotPublishedError):
        shmarena.connect(name)


def test_dataset_from_an_image_file(tmp_path):
    name = unique("di")
    path = tmp_path / "lexicon.arena"
    workers.build_small_arena().save(path)
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster, timeout=60) as client:
        client.register_plugin(shmarena.dask.Dataset(name, path=path))
        got = client.gather(client.map(workers.dataset_lookup, [name] * 4, ["w1", "w2", "zz", "w999"], pure=False))
        assert [v for *_, v in got] == [("fruit", 1), ("veg", 2), None, ("fruit", 999)]


def test_dataset_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        shmarena.dask.Dataset("x")
    with pytest.raises(ValueError, match="exactly one"):
        shmarena.dask.Dataset("x", path="a", build=workers.build_small_arena)


def test_get_fails_fast_when_nothing_publishes_the_name():
    import shmarena._node

    name = unique("nobody")
    t0 = time.monotonic()
    with pytest.raises(shmarena.NotPublishedError, match="no process is loading or building it") as e:
        shmarena.dask.get(name, wait=600)
    assert time.monotonic() - t0 < 2 + shmarena._node.NO_HOLDER_GRACE
    assert name in str(e.value)


def test_a_failed_setup_reaches_the_tasks_with_its_cause():
    name = unique("df")
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster, timeout=60) as client:
        with pytest.raises(Exception, match="corrupt"):
            client.register_plugin(shmarena.dask.Dataset(name, build=workers.failing_build))
        kind, text, took = client.submit(workers.get_and_report, name, 600.0, pure=False).result()
        assert kind == "NotPublishedError"
        assert "failed to make it: ValueError: the input file is corrupt (test)" in text, text
        assert took < 5, took

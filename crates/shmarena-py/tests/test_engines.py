"""The clients people already use, with views passed as task arguments: joblib (loky),
ProcessPoolExecutor under every start method, Dask LocalCluster, local Ray. Each checks the
results and that no worker's anonymous memory grows while it reads a 64+ MiB dataset."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

import numpy as np
import pytest

import shmarena
import workers

HERE = os.path.dirname(os.path.abspath(__file__))
GROWTH_LIMIT_KIB = 5 * 1024
N_WORDS = 200_000
MATRIX = (4096, 4096)  # float32: 64 MiB

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def big():
    """A 64 MiB float32 matrix and a 200,000-entry dict, in one sealed memfd arena."""
    lexicon = {f"w{i}": ("fruit" if i % 2 else "veg", i / 7) for i in range(N_WORDS)}
    matrix = np.arange(MATRIX[0] * MATRIX[1], dtype=np.float32).reshape(MATRIX) % 1000
    with shmarena.build() as b:
        b.put("lexicon", lexicon)
        b.put_array("matrix", matrix)
    arena = b.arena
    assert arena.nbytes > 70 * 2**20
    expected_sum = float(matrix.sum(dtype=np.float64))
    del lexicon, matrix
    yield arena, expected_sum
    arena.close()


def chunks(n_tasks: int):
    """Word lists for `n_tasks` tasks: half of each list is in the lexicon."""
    per = N_WORDS // n_tasks
    return [[f"w{i}" for i in range(t * per, (t + 1) * per, 2)] + [f"x{i}" for i in range(per // 2)] for t in range(n_tasks)]


def check(results, expected_sum, n_tasks):
    assert len(results) == n_tasks
    per = N_WORDS // n_tasks
    for pid, found, total, growth in results:
        assert found == per // 2
        assert abs(total - expected_sum) < 1e-6 * expected_sum
        assert growth < GROWTH_LIMIT_KIB, f"worker {pid}: anonymous memory grew by {growth} KiB"
    return {pid for pid, *_ in results}


def test_joblib_loky(big):
    joblib = pytest.importorskip("joblib", reason="joblib is not installed (ci.sh: requirements-test-full.txt)")
    arena, expected = big
    lex, mat = arena["lexicon"], arena["matrix"]
    try:
        results = joblib.Parallel(n_jobs=2, backend="loky", timeout=180)(
            joblib.delayed(workers.read_all)(lex, mat, words) for words in chunks(4)
        )
        pids = check(results, expected, 4)
        assert os.getpid() not in pids
    finally:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_process_pool_executor(big, method):
    arena, expected = big
    lex, mat = arena["lexicon"], arena["matrix"]
    words = chunks(4)
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        results = list(ex.map(workers.read_all, [lex] * 4, [mat] * 4, words, timeout=180))
    check(results, expected, 4)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (ci.sh: requirements-test-full.txt)")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster, timeout=60) as client:
        yield client


def test_dask_local_cluster_views_as_arguments(big, dask_client):
    arena, expected = big
    lex, mat = arena["lexicon"], arena["matrix"]
    futures = dask_client.map(workers.read_all, [lex] * 4, [mat] * 4, chunks(4), pure=False)
    results = dask_client.gather(futures, errors="raise", direct=None)
    pids = check(results, expected, 4)
    assert pids <= set(dask_client.run(os.getpid).values())


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="ray is not installed (ci.sh: requirements-test-full.txt)")
    old = os.environ.get("PYTHONPATH")
    # Ray's workers are started by its raylet, not by us: they find tests/workers.py this way.
    os.environ["PYTHONPATH"] = HERE + (os.pathsep + old if old else "")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"ray cannot start on this machine: {e}")
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_ray_views_as_arguments(big, ray_session):
    ray = ray_session
    arena, expected = big
    lex, mat = arena["lexicon"], arena["matrix"]
    task = ray.remote(workers.read_all)
    results = ray.get([task.remote(lex, mat, w) for w in chunks(4)], timeout=180)
    check(results, expected, 4)


def test_ray_dataset_per_node_from_image_bytes(ray_session, tmp_path):
    ray = ray_session
    import shmarena.ray

    path = tmp_path / "small.arena"
    workers.build_small_arena().save(path)
    image = ray.put(path.read_bytes())
    name = f"sapy-ray-{os.getpid()}"
    with shmarena.ray.Dataset(name, image=image) as ds:
        info = ds.info()
        assert len(info) == 1 and info[0]["publishes"] and info[0]["published"] == name
        task = ray.remote(workers.ray_dataset_lookup)
        got = ray.get([task.remote(name, f"w{i}") for i in range(8)], timeout=120)
        assert {g[1] for g in got} == {info[0]["arena"]}
        assert [g[2] for g in got] == [("fruit" if i % 2 else "veg", i) for i in range(8)]
        assert all(g[3] == float(np.arange(64).sum()) for g in got)
        # A process of this node that the holder did not start connects by name too.
        assert shmarena.connect(name).id == info[0]["arena"]
    with pytest.raises(shmarena.NotPublishedError):
        shmarena.connect(name)


def test_ray_dataset_per_node_built(ray_session):
    ray = ray_session
    import shmarena.ray

    name = f"sapy-rayb-{os.getpid()}"
    with shmarena.ray.Dataset(name, build=workers.build_small_arena) as ds:
        (info,) = ds.info()
        task = ray.remote(workers.ray_dataset_lookup)
        got = ray.get([task.remote(name, "w5") for _ in range(4)], timeout=120)
        assert {g[1] for g in got} == {info["arena"]} and got[0][2] == ("fruit", 5)

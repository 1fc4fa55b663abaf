"""Real worker processes: every start method, ProcessPoolExecutor, attach-once, stale handles,
killed workers, read-only enforcement, cleanup."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest

import shmarena
import workers

METHODS = ["fork", "forkserver", "spawn"]
HERE = os.path.dirname(os.path.abspath(__file__))


def make_arena(closing, **build_kwargs):
    rng = np.random.default_rng(0)
    lexicon = {f"w{i}": ("fruit" if i % 2 else "veg", i / 10) for i in range(2000)}
    with shmarena.build(**build_kwargs) as b:
        b.put("lexicon", lexicon)
        b.put_array("centroids", rng.random((100, 8), dtype=np.float64).astype(np.float32))
    closing(b.arena)
    return b.arena, lexicon


def expected_labels(lexicon, words):
    return {w: (lexicon[w][0] if w in lexicon else None) for w in words}


@pytest.mark.parametrize("method", METHODS)
def test_pool_imap_unordered_every_start_method(method, closing):
    arena, lexicon = make_arena(closing)
    words = [f"w{i}" for i in range(0, 4000, 7)]
    total = float(arena["centroids"].sum())
    task = partial(workers.lookup, arena["lexicon"], arena["centroids"])
    with mp.get_context(method).Pool(2) as pool:
        got = list(pool.imap_unordered(task, words, chunksize=50))
    assert {w: label for w, label, _ in got} == expected_labels(lexicon, words)
    assert all(abs(s - total) < 1e-3 for _, _, s in got)


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_executor_every_start_method(method, closing):
    arena, lexicon = make_arena(closing)
    words = [f"w{i}" for i in range(0, 3000, 11)]
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        got = list(ex.map(partial(workers.lookup, arena["lexicon"], arena["centroids"]), words, chunksize=20))
    assert {w: label for w, label, _ in got} == expected_labels(lexicon, words)


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_each_worker_attaches_once(method, closing):
    arena, _ = make_arena(closing)
    lex, arr = arena["lexicon"], arena["centroids"]
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        views = list(ex.map(workers.whoami, [lex] * 40 + [lex["w3"]] * 10 + [arena] * 5, chunksize=1))
        arrays = list(ex.map(workers.sum_array, [arr] * 20, chunksize=1))
    for pid, ids, _ in views:
        assert ids == [arena.id], (pid, ids)
    for pid, ids, _, writeable in arrays:
        assert ids == [arena.id] and writeable is False
    assert {len_ for _, _, len_ in views} == {len(lex), 2, len(arena)}


@pytest.mark.parametrize("method", METHODS)
def test_worker_arrays_are_the_shared_read_only_mapping(method, closing):
    with shmarena.build() as b:
        b.put_array("top", np.arange(1000, dtype=np.float64))
        b.put("nested", {"a": [np.arange(10, dtype=np.int32)]})
    closing(b.arena)
    arrays = [b.arena["top"], b.arena["nested"]["a"][0]]
    with mp.get_context(method).Pool(1) as pool:
        got = pool.map(workers.mapping_of, arrays)
    for perms, path in got:
        assert perms == "r--s", perms  # read-only, shared: the worker copied nothing
        assert path.startswith("/memfd:shmarena"), path


def test_fork_children_reuse_the_parents_mapping(closing):
    arena, _ = make_arena(closing)
    parent_ids = shmarena.attached_ids()
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(workers.whoami, [arena["lexicon"]] * 10, chunksize=1)
    for _, ids, _ in got:
        assert ids == parent_ids  # nothing new attached: the inherited cache served every task


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_many_workers_attach_at_once(method, closing):
    arena, lexicon = make_arena(closing)
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["numpy", "shmarena", "workers"])
    n = 12
    with cf.ProcessPoolExecutor(n, mp_context=ctx) as ex:
        got = list(ex.map(workers.whoami, [arena["lexicon"]] * (4 * n), chunksize=1))
    pids = {pid for pid, _, _ in got}
    assert len(pids) >= 2
    assert all(ids == [arena.id] and n_ == len(lexicon) for _, ids, n_ in got)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ctypes_write_kills_only_that_child(method, closing):
    arena, _ = make_arena(closing)
    arr = arena["centroids"]
    before = np.array(arr)
    ctx = mp.get_context(method)
    p = ctx.Process(target=workers.write_with_ctypes, args=(arr,))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGSEGV
    assert np.array_equal(arena["centroids"], before)
    assert np.array_equal(arr, before)
    # The parent and other workers carry on.
    with ctx.Pool(1) as pool:
        assert pool.apply(workers.sum_array, (arr,))[2] == pytest.approx(float(before.sum()), rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_worker_killed_mid_task(method, closing):
    arena, lexicon = make_arena(closing)
    ctx = mp.get_context(method)
    view = arena["lexicon"]
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(workers.die_on, view, x) for x in range(6)]
        with pytest.raises(cf.process.BrokenProcessPool):
            for f in futures:
                f.result(timeout=60)
    # The arena is intact and a new pool can use the same handles.
    assert view["w2"].to_python() == lexicon["w2"]
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert [r[0] for r in ex.map(workers.die_on, [view] * 3, [0, 1, 2])] == [0, 1, 2]


def test_stale_handle_after_owner_exits():
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=workers.pickle_handle_and_exit, args=(send,))
    p.start()
    data = recv.recv()
    p.join(60)
    assert p.exitcode == 0
    with pytest.raises(shmarena.StaleHandleError, match="gone"):
        pickle.loads(data)


def test_stale_handle_after_close():
    import gc

    with shmarena.build() as b:
        b.put("v", [1, 2, 3])
    data = pickle.dumps(b.arena["v"])
    b.arena.close()
    del b
    gc.collect()
    # A new arena probably reuses the descriptor number; the id check catches it either way.
    with shmarena.build() as b2:
        b2.put("v", [4, 5, 6])
    try:
        with pytest.raises(shmarena.StaleHandleError):
            pickle.loads(data)
    finally:
        b2.arena.close()


def test_named_arena_workers_never_unlink(closing, shm_name):
    arena, lexicon = make_arena(closing, name=shm_name)
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.map(workers.whoami, [arena["lexicon"]] * 4)
    assert all(n == len(lexicon) for _, _, n in got)
    assert os.path.exists(f"/dev/shm/{shm_name}"), "a worker that attached removed the name"
    arena.close()
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_file_arena_in_workers(closing, tmp_path):
    arena, lexicon = make_arena(closing, path=str(tmp_path / "lex.arena"))
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.map(workers.to_python, [arena["lexicon"]["w5"]] * 2)
    assert got == [lexicon["w5"], lexicon["w5"]]


SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, concurrent.futures as cf, sys, os
    from functools import partial
    import numpy as np, shmarena, workers

    def main():
        name = sys.argv[1]
        with shmarena.build(name=name) as b:
            b.put("lexicon", {f"w{i}": ("x", i) for i in range(100)})
            b.put_array("c", np.ones((10, 4), dtype=np.float32))
        a = b.arena
        with shmarena.build() as b2:
            b2.put("m", {"k": [1, 2]})
        task = partial(workers.lookup, a["lexicon"], a["c"])
        for method in ("fork", "forkserver", "spawn"):
            ctx = mp.get_context(method)
            with ctx.Pool(2) as pool:
                assert len(list(pool.imap_unordered(task, [f"w{i}" for i in range(50)], chunksize=5))) == 50
            with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
                assert list(ex.map(workers.to_python, [b2.arena["m"]])) == [{"k": [1, 2]}]
        assert os.path.exists("/dev/shm/" + name)
        print("done", flush=True)
        # No close(): the owner's exit must remove the name.

    if __name__ == "__main__":
        main()
    """
)


def test_whole_run_leaves_nothing_and_warns_nothing(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    name = f"sapy-{os.getpid()}-script"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-W", "always", str(script), name],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "resource_tracker" not in out.stderr, out.stderr
    assert "leaked" not in out.stderr, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    assert not os.path.exists(f"/dev/shm/{name}"), "the owner's exit did not remove the name"


def test_classify_example_runs():
    example = os.path.join(HERE, "..", "..", "..", "examples", "python", "classify.py")
    if not os.path.exists(example):
        pytest.skip("examples/python/classify.py is not in this checkout")
    out = subprocess.run(
        [sys.executable, "-W", "always", example, "--rows", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [ln.split(":")[0].strip() for ln in lines[:3]] == ["fork", "forkserver", "spawn"]
    assert all("3000 rows" in ln for ln in lines[:3])
    assert "Warning" not in out.stderr, out.stderr


def test_unrelated_process_opens_a_named_arena(closing, shm_name):
    arena, lexicon = make_arena(closing, name=shm_name)
    code = textwrap.dedent(
        f"""
        import shmarena
        a = shmarena.open(name={shm_name!r})
        assert not a.owner
        print(a["lexicon"]["w7"].to_python(), a["centroids"].shape)
        a.close()  # not the owner: must not remove the name
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("(", 1)[1].startswith(repr(lexicon["w7"])[1:])
    assert os.path.exists(f"/dev/shm/{shm_name}")
    arena.close()


def test_fork_child_is_not_the_owner(closing):
    arena, _ = make_arena(closing)
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.apply(getattr, (arena, "owner")) is False
    assert arena.owner is True


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parent_reads_an_arena_a_child_built(method):
    ctx = mp.get_context(method)
    recv, send = ctx.Pipe(duplex=False)
    done = ctx.Event()
    p = ctx.Process(target=workers.build_send_and_wait, args=(send, done))
    p.start()
    try:
        view = pickle.loads(recv.recv())
        assert view["from"] == "child" and view["pid"] == p.pid
        assert view["arr"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        done.set()
        p.join(60)
    assert p.exitcode == 0
    # Attached here, so the mapping outlives the child that built it.
    assert view["arr"].sum() == 10.0


def test_threads_read_views_concurrently(closing):
    arena, lexicon = make_arena(closing)
    lex, arr = arena["lexicon"], arena["centroids"]
    words = list(lexicon)

    def work(seed):
        rng = np.random.default_rng(seed)
        for i in rng.integers(len(words), size=2000):
            w = words[i]
            assert lex[w].to_python() == lexicon[w]
        return float(arr.sum())

    with cf.ThreadPoolExecutor(8) as ex:
        sums = list(ex.map(work, range(16)))
    assert len(set(sums)) == 1


def _token_span(handle: bytes) -> tuple[int, int]:
    """Where the trust token sits in handle bytes (version 2): after the id, the locator (tag 3)
    and the entry name; returns (start, end) of the token's bytes."""
    assert handle[0] == 2 and handle[17] == 3
    p = 19 + handle[18]  # locator text (short: one-byte length)
    p += 1 + handle[p]  # entry name
    n = handle[p]  # token length (under 128 here: one byte)
    return p + 1, p + 1 + n


def _restore_elsewhere(handle: bytes, opt_in: bool = True) -> str:
    """Unpickles `handle` in a fresh interpreter (spawned, not forked: nothing inherited), which
    takes pickles' trust rows if `opt_in`, and returns whether it trusts entry "lexicon", and a
    value read from it."""
    code = textwrap.dedent(
        f"""
        import shmarena
        if {opt_in!r}:
            shmarena.trust_pickled_rows()
        a = shmarena._restore({handle!r})
        print(a.trusts("lexicon"), tuple(a["lexicon"]["w7"]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pickles_carry_trust_that_a_forgery_cannot(closing):
    """A pickle is a trusted channel: it carries the build identity, the memfd's inode and the
    trust rows, and a process of the same build reads the entries it names without validation.
    A pickle with a tampered build identity, inode or row is not trusted: its entries are
    validated, never read blind."""
    arena, _ = make_arena(closing)
    assert arena.trusts("lexicon"), "built here: the writer validated it"
    handle = arena.__reduce__()[1][0]
    start, end = _token_span(handle)
    # build identity (16 bytes), the memfd's inode (8), then 20 bytes per row
    assert (end - start - 24) % 20 == 0 and end - start > 24
    genuine = _restore_elsewhere(handle)
    assert genuine.startswith("True"), genuine
    # Without `shmarena.trust_pickled_rows()` the token is ignored: validated on first read.
    plain = _restore_elsewhere(handle, opt_in=False)
    assert plain.startswith("False"), plain
    other_build = bytearray(handle)
    other_build[start] ^= 0xFF
    got = _restore_elsewhere(bytes(other_build))
    assert got.startswith("False"), got
    other_memfd = bytearray(handle)
    other_memfd[start + 16] ^= 0x01  # the rows speak of another memfd than the one named
    got = _restore_elsewhere(bytes(other_memfd))
    assert got.startswith("False"), got
    other_rows = bytearray(handle)
    for row in range(start + 24, end, 20):
        other_rows[row + 19] ^= 0xFF  # the last byte of each row's type digest
    got = _restore_elsewhere(bytes(other_rows))
    assert got.startswith("False"), got
    # Trusted or validated, the value read is the same.
    assert got.split(" ", 1)[1] == genuine.split(" ", 1)[1], (got, genuine)
    assert "fruit" in genuine and "0.7" in genuine, genuine

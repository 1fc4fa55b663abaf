"""The arena service from Python: publish, connect and subscribe by name across unrelated
processes, generations, a killed publisher; and image files (save/load)."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import shmarena
import workers

HERE = os.path.dirname(os.path.abspath(__file__))
_counter = itertools.count()


@pytest.fixture
def svc_name():
    return f"sapy-svc-{os.getpid()}-{next(_counter)}"


def build(value: int, n: int = 1000):
    with shmarena.build() as b:
        b.put("lexicon", {f"w{i}": ("fruit" if i % 2 else "veg", value) for i in range(n)})
        b.put_array("weights", np.full(16, value, dtype=np.float32))
    return b.arena


def unix_socket_names():
    with open("/proc/net/unix") as f:
        return f.read()


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that inherits nothing but PATH and the venv."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": HERE}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        close_fds=True,
    )


def test_publish_connect_same_process(svc_name):
    arena = build(1)
    with arena.publish(svc_name) as pub:
        assert pub.name == svc_name and pub.generation == 1 and not pub.closed
        got = shmarena.connect(svc_name)
        assert got.id == arena.id
        assert got["lexicon"]["w3"] == ("fruit", 1)
        assert svc_name in repr(pub)
    assert pub.closed
    with pytest.raises(shmarena.NotPublishedError, match=svc_name):
        shmarena.connect(svc_name)
    pub.close()  # twice: nothing happens
    with pytest.raises(shmarena.ServiceError, match="closed"):
        pub.publish(arena)


def test_already_published_is_typed(svc_name):
    arena = build(1)
    with arena.publish(svc_name):
        with pytest.raises(shmarena.AlreadyPublishedError, match=svc_name):
            arena.publish(svc_name)
        assert issubclass(shmarena.AlreadyPublishedError, shmarena.ShmarenaError)


def test_the_builders_named_arena_serves_its_sealed_copy(svc_name, shm_name):
    """Only sealed memfds are served (a segment mapped in place is refused: the Rust test
    `publishing_a_file_arena_is_refused`). The builder's own arena of a named segment reads a
    sealed copy of it, so it may be published, and readers get that copy."""
    with shmarena.build(name=shm_name) as b:
        b.put("x", 1)
    try:
        with b.arena.publish(svc_name):
            got = shmarena.connect(svc_name)
            assert got["x"] == 1
            got.close()
    finally:
        b.arena.close()


def test_unrelated_process_connects_by_name(svc_name):
    arena = build(7)
    with arena.publish(svc_name):
        out = run_python(
            """
            import sys, shmarena
            a = shmarena.connect(sys.argv[1])
            lex = a["lexicon"]
            print(type(lex).__name__, len(lex), lex["w5"][0], lex["w5"][1], float(a["weights"].sum()))
            """,
            svc_name,
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MapView", "1000", "fruit", "7", "112.0"]


def test_connect_errors_in_a_fresh_process(svc_name):
    out = run_python(
        """
        import sys, shmarena
        try:
            shmarena.connect(sys.argv[1], timeout=2.0)
        except shmarena.NotPublishedError as e:
            print("NotPublishedError", e)
        """,
        svc_name,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("NotPublishedError") and svc_name in out.stdout


PUBLISHER = """
import sys, time, numpy as np, shmarena
with shmarena.build() as b:
    b.put("lexicon", {f"w{i}": ("fruit", i) for i in range(50_000)})
    b.put_array("weights", np.arange(100_000, dtype=np.float32))
pub = b.arena.publish(sys.argv[1])
print("ready", flush=True)
time.sleep(600)
"""


def test_killed_publisher_readers_keep_reading(svc_name):
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, svc_name],
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        arena = shmarena.connect(svc_name)
        lex, weights = arena["lexicon"], arena["weights"]
        sub = shmarena.subscribe(svc_name)
        assert f"@shmarena/{os.getuid()}/{svc_name}" in unix_socket_names()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # The readers keep their mappings: every value still reads right.
    assert len(lex) == 50_000 and lex["w49999"] == ("fruit", 49999)
    assert float(weights[-1]) == 99_999.0 and float(weights.sum()) == float(np.arange(100_000, dtype=np.float32).sum())
    # The subscription knows its publisher died (the kernel marked the generation page): current()
    # raises instead of returning the dead publisher's arena; last() still reads it.
    with pytest.raises(shmarena.ServiceError, match="died"):
        sub.current()
    assert sub.last()["lexicon"]["w1"] == ("fruit", 1)
    with pytest.raises(shmarena.NotPublishedError):
        shmarena.connect(svc_name)
    with pytest.raises(shmarena.NotPublishedError):
        sub.refresh()
    assert sub.last()["lexicon"]["w2"] == ("fruit", 2)
    assert f"@shmarena/{os.getuid()}/{svc_name}" not in unix_socket_names()


def test_subscription_follows_generations_old_views_stay(svc_name):
    first = build(1)
    with first.publish(svc_name) as pub:
        sub = shmarena.subscribe(svc_name)
        a1 = sub.current()
        assert sub.current() is a1  # nothing changed: the same object, no fetch
        old_lex, old_w = a1["lexicon"], a1["weights"]
        assert pub.publish(build(2)) == 2
        a2 = sub.current()
        assert sub.generation == 2 and a2.id != a1.id and pub.arena.id == a2.id
        assert a2["lexicon"]["w1"] == ("fruit", 2) and float(a2["weights"][0]) == 2.0
        # Views taken before the switch still read the first generation.
        assert old_lex["w1"] == ("fruit", 1) and float(old_w.sum()) == 16.0
        for g in range(3, 8):
            pub.publish(build(g, n=10))
        assert sub.current()["lexicon"]["w9"] == ("fruit", 7) and sub.generation == 7
        assert old_lex["w998"] == ("veg", 1)
        assert "generation 7" in repr(sub) and sub.name == svc_name


def test_subscriber_in_another_process_sees_a_new_generation(svc_name):
    code = """
    import sys, shmarena
    sub = shmarena.subscribe(sys.argv[1])
    first = sub.current()["lexicon"]
    print(sub.generation, first["w1"][1], flush=True)
    sys.stdin.readline()
    print(sub.current()["lexicon"]["w1"][1], sub.generation, first["w1"][1], flush=True)
    """
    with build(1).publish(svc_name) as pub:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), svc_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"PATH": os.environ.get("PATH", "")},
        )
        try:
            assert proc.stdout.readline().split() == ["1", "1"]
            pub.publish(build(5))
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().split() == ["5", "2", "1"]
        finally:
            proc.kill()
            proc.wait(30)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_views_of_a_connected_arena_pickle_to_workers(svc_name, method):
    with build(3).publish(svc_name):
        arena = shmarena.connect(svc_name)
        lex = arena["lexicon"]
        with cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
            got = list(ex.map(workers.lookup, [lex] * 4, [arena["weights"]] * 4, ["w1", "w2", "nope", "w9"]))
    assert [g[1] for g in got] == ["fruit", "veg", None, "fruit"]
    assert all(g[2] == 48.0 for g in got)


def test_fork_child_cannot_stop_the_parents_publisher(svc_name):
    arena = build(4)
    with arena.publish(svc_name) as pub:
        ctx = mp.get_context("fork")
        p = ctx.Process(target=workers.close_publisher, args=(pub,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert shmarena.connect(svc_name)["lexicon"]["w1"] == ("fruit", 4)


def test_save_and_load(tmp_path, svc_name):
    arena = build(9)
    path = tmp_path / "lexicon.arena"
    arena.save(path)
    assert path.stat().st_size == arena.nbytes
    assert [p.name for p in tmp_path.iterdir()] == ["lexicon.arena"]
    loaded = shmarena.load(path)
    assert loaded.id == arena.id and loaded.kernel_sealed
    assert loaded["lexicon"]["w8"] == ("veg", 9)
    assert loaded["weights"].dtype == np.float32 and float(loaded["weights"].sum()) == 144.0
    # A loaded image is a sealed memfd: it can be published and pickled to workers.
    with loaded.publish(svc_name):
        assert shmarena.connect(svc_name)["lexicon"]["w8"] == ("veg", 9)
    assert pickle.loads(pickle.dumps(loaded["lexicon"]))["w1"] == ("fruit", 9)
    loaded.verify()


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.arena"
    bad.write_bytes(b"not an arena at all" * 10)
    with pytest.raises(shmarena.ShmarenaError, match="bad.arena"):
        shmarena.load(bad)
    with pytest.raises(shmarena.ShmarenaError, match="missing.arena"):
        shmarena.load(tmp_path / "missing.arena")
    good = tmp_path / "good.arena"
    build(1).save(good)
    data = bytearray(good.read_bytes())
    data[-1] ^= 0xFF  # a flipped payload byte fails its checksum
    bad.write_bytes(bytes(data))
    with pytest.raises(shmarena.ShmarenaError):
        shmarena.load(bad)

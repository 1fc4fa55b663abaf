"""What a new Python user stumbled on (issue 16, Python part): ordinary numpy results, view
pickling, build memory, named-arena lifecycle, threads, and the smaller conveniences."""

from __future__ import annotations

import collections.abc as abc
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import shmarena
import workers
from arenas import build


# ------------------------------------------------ 2. derived arrays are ordinary numpy


def test_arrays_computed_from_a_shared_array_are_plain(closing):
    E = build(closing, E=np.arange(60, dtype=np.float64).reshape(10, 6))["E"]
    q = np.ones(6)
    assert isinstance(E, shmarena.SharedArray)
    for derived in (
        E + 1,
        E @ q,
        np.argsort(E[:, 0]),
        E[:, 0].argsort(),
        E.astype(np.float32),
        E.copy(),
        E[[1, 2]],
        E[E[:, 0] > 3],
        E.sum(axis=0),
        np.sort(E, axis=1),
        np.concatenate([E, E]),
        E.flatten(),
        np.where(E > 3, E, 0),
    ):
        assert type(derived) is np.ndarray, type(derived)
        assert not np.shares_memory(derived, E)
    mean = E.mean()
    assert type(mean) is np.float64 and mean == 29.5
    assert isinstance(mean, float)
    assert hash(mean) == hash(29.5)
    assert json.dumps(float(E.max())) == "59.0"
    assert type(E.sum()) is np.float64 and type(E.max()) is np.float64
    assert type(np.mean(E)) is np.float64
    # Views still read the arena's pages, and stay read-only.
    for view in (E[2:5], E.T, E[::2, ::-3], E[0], E.reshape(-1)):
        assert type(view) is shmarena.SharedArray
        assert np.shares_memory(view, E) and not view.flags.writeable


# ------------------------------------------------ 3. slices pickle as handle + place


def test_slices_of_a_shared_array_pickle_as_handles(closing):
    E = build(closing, E=np.arange(200_000 * 64, dtype=np.float32).reshape(200_000, 64))["E"]
    s = E[:100_000]
    data = pickle.dumps(s)
    assert len(data) < 200, len(data)
    back = pickle.loads(data)
    assert type(back) is shmarena.SharedArray
    assert np.array_equal(back, s) and back.shape == s.shape
    assert np.shares_memory(back, E) and not back.flags.writeable
    for view in (E[5:9, 3], E.T[::3, ::-2], E[-1], E[10:20].view(np.uint8), E[7, 7:8]):
        raw = pickle.dumps(view, protocol=5)
        assert len(raw) < 200, (view.shape, len(raw))
        again = pickle.loads(raw)
        assert np.array_equal(again, view) and again.dtype == view.dtype
        assert again.strides == view.strides and np.shares_memory(again, E)
    # What is computed from it still pickles its data.
    assert len(pickle.dumps(E[:10] * 2)) > 10 * 64 * 4


def test_slices_reach_workers_as_views(closing):
    from multiprocessing import get_context

    E = build(closing, E=np.arange(4000 * 8, dtype=np.int64).reshape(4000, 8))["E"]
    with get_context("forkserver").Pool(1) as pool:
        total, shared = pool.apply(workers.shares_arena_pages, (E[1000:3000:2, ::-1],))
    assert total == int(E[1000:3000:2, ::-1].sum()) and shared


# ------------------------------------------------ 4. build memory is returned


def test_build_returns_its_heap_to_the_system():
    code = textwrap.dedent(
        """
        import gc
        import shmarena

        def anon_kib():
            with open("/proc/self/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Anonymous:"):
                        return int(line.split()[1])

        start = anon_kib()
        data = {f"word{i}": (f"label{i % 32}", i * 0.5, [i, i + 1]) for i in range(300_000)}
        gc.collect()
        before = anon_kib()
        with shmarena.build() as b:
            b.put("lex", data)
        after = anon_kib()
        print(start, before, after)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    start, before, after = map(int, out.stdout.split())
    source = before - start  # the dict being archived
    kept = after - before  # what building it left in the process
    # Without trimming, glibc keeps the freed value tree: about 1.5x the dict.
    assert kept < source // 4, f"the build kept {kept} KiB of anonymous memory (the dict: {source})"


# ------------------------------------------------ 5. named arenas


def _shm(name):
    return os.path.exists(f"/dev/shm/{name}")


def test_persisted_named_arena_outlives_its_builder(shm_name):
    code = textwrap.dedent(
        f"""
        import shmarena
        with shmarena.build(name={shm_name!r}, persist=True) as b:
            b.put("v", {{"a": 1}})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    try:
        assert _shm(shm_name)
        assert shmarena.open(name=shm_name)["v"]["a"] == 1
    finally:
        shmarena.remove(shm_name)
    assert not _shm(shm_name)
    with pytest.raises(shmarena.ShmarenaError, match="no named arena"):
        shmarena.remove(shm_name)
    shmarena.remove(shm_name, missing_ok=True)
    with pytest.raises(ValueError, match="named arenas"):
        shmarena.build(persist=True)


def test_killed_builders_orphan_is_removed_and_overwritten(shm_name):
    code = textwrap.dedent(
        f"""
        import os, signal, shmarena
        with shmarena.build(name={shm_name!r}) as b:
            b.put("v", 1)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    p = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert _shm(shm_name)
    with pytest.raises(shmarena.ShmarenaError) as info:
        shmarena.build(name=shm_name)
    msg = str(info.value)
    assert "already exists" in msg and f"shmarena.remove({shm_name!r})" in msg, msg
    assert "overwrite=True" in msg, msg
    # overwrite=True replaces the orphan.
    with shmarena.build(name=shm_name, overwrite=True) as b:
        b.put("v", 2)
    assert shmarena.open(name=shm_name)["v"] == 2
    b.arena.close()
    assert not _shm(shm_name)
    # And a fresh orphan goes with remove().
    subprocess.run([sys.executable, "-c", code], timeout=60)
    assert _shm(shm_name)
    shmarena.remove(shm_name)
    assert not _shm(shm_name)


def test_named_arena_of_a_running_builder_is_refused(shm_name, closing):
    with shmarena.build(name=shm_name) as b:
        b.put("v", 1)
    closing(b.arena)
    with pytest.raises(shmarena.ShmarenaError, match="this process built it"):
        shmarena.build(name=shm_name)
    code = f"import shmarena; shmarena.build(name={shm_name!r}, overwrite=True)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "is still running" in p.stderr, p.stderr
    code = f"import shmarena; shmarena.remove({shm_name!r})"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "force=True" in p.stderr, p.stderr
    assert _shm(shm_name)


def test_remove_refuses_what_is_not_an_arena(shm_name):
    path = f"/dev/shm/{shm_name}"
    with open(path, "wb") as f:
        f.write(b"not an arena" * 20)
    try:
        with pytest.raises(shmarena.ShmarenaError, match="not a shmarena arena"):
            shmarena.remove(shm_name)
        with pytest.raises(shmarena.ShmarenaError, match="not a shmarena arena"):
            shmarena.build(name=shm_name, overwrite=True)
        assert os.path.exists(path)
    finally:
        os.remove(path)
    with pytest.raises(shmarena.ShmarenaError, match="invalid name"):
        shmarena.remove("../etc/passwd")


def test_file_overwrite_and_missing_directory(tmp_path, closing):
    path = tmp_path / "a.arena"
    with shmarena.build(path=path) as b:
        b.put("v", 1)
    closing(b.arena)
    with pytest.raises(shmarena.ShmarenaError, match="overwrite=True"):
        shmarena.build(path=path)
    with shmarena.build(path=path, overwrite=True) as b:
        b.put("v", 2)
    closing(b.arena)
    assert shmarena.open(path=path)["v"] == 2
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(shmarena.ShmarenaError) as info:
        shmarena.build(path=missing / "x.arena")
    msg = str(info.value)
    assert f"directory {missing} does not exist" in msg and ".building" not in msg, msg


# ------------------------------------------------ 7. threads


def test_builder_from_another_thread_raises_a_normal_exception(closing):
    b = shmarena.build()
    b.put("a", 1)
    caught = []

    def use():
        try:
            b.put("b", 2)
        except Exception as e:  # noqa: BLE001 - the point: `except Exception` catches it
            caught.append(e)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert len(caught) == 1
    e = caught[0]
    assert type(e) is shmarena.WrongThreadError
    assert isinstance(e, shmarena.ShmarenaError) and "thread" in str(e)
    closing(b.seal())
    assert b.arena["a"] == 1 and "b" not in b.arena


# ------------------------------------------------ 8. smaller points


def test_list_view_index_with_start_and_stop(closing):
    v = build(closing, v=[5, 1, 5, 2, 5])["v"]
    orig = [5, 1, 5, 2, 5]
    for args in [(5,), (5, 1), (5, 1, 3), (5, -2), (5, -3, -1), (2, 0, 10), (5, 3, 100)]:
        assert v.index(*args) == orig.index(*args), args
    for args in [(5, 1, 2), (1, 2), (5, 5), (9,)]:
        with pytest.raises(ValueError):
            v.index(*args)


def test_reversed_map_view_and_arena_as_mapping(closing):
    d = {"b": 1, "a": [2], "c": {"x": 3}}
    arena = build(closing, m=d, n=7)
    m = arena["m"]
    assert list(reversed(m)) == list(reversed(d)) == ["c", "a", "b"]
    assert isinstance(arena, abc.Mapping)
    assert list(arena.keys()) == ["m", "n"] and "m" in arena.keys()
    items = dict(arena.items())
    assert items["n"] == 7 and items["m"] == d
    assert [v == d or v == 7 for v in arena.values()] == [True, True]
    assert list(reversed(arena)) == ["n", "m"]
    assert dict(arena)["n"] == 7


def test_stored_tuples_are_hashable(closing):
    arena = build(closing, t=(1, "a", (2.5, b"x")), l=[1, 2])
    t = arena["t"]
    assert hash(t) == hash((1, "a", (2.5, b"x")))
    assert {t: "yes"}[(1, "a", (2.5, b"x"))] == "yes"
    assert t in {(1, "a", (2.5, b"x"))}
    assert hash(t[2]) == hash((2.5, b"x"))
    with pytest.raises(TypeError, match="unhashable"):
        hash(arena["l"])


def test_json_dumps_with_to_json_default(closing):
    value = {"a": [1, 2.5, None, True], "b": {"c": ("x", 3)}, "arr": np.arange(3)}
    arena = build(closing, v=value, E=np.eye(2))
    out = json.dumps(arena["v"], default=shmarena.to_json_default)
    assert json.loads(out) == {"a": [1, 2.5, None, True], "b": {"c": ["x", 3]}, "arr": [0, 1, 2]}
    assert json.loads(json.dumps(arena["E"], default=shmarena.to_json_default)) == [
        [1.0, 0.0],
        [0.0, 1.0],
    ]
    assert json.dumps(arena["E"].mean(), default=shmarena.to_json_default) == "0.5"
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps({"x": object()}, default=shmarena.to_json_default)


def test_import_does_not_load_numpy_until_an_array_is_read():
    """A worker that reads only dicts and lists starts without numpy's import (most of a spawned
    worker's start); arrays, `SharedArray` and pickles of array views still work, loading numpy
    on first use."""
    code = textwrap.dedent(
        """
        import json, pickle, sys
        import shmarena
        assert "numpy" not in sys.modules
        with shmarena.build() as b:
            b.put("d", {"a": [1, 2], "b": {"c": "x"}})
        arena = b.arena
        d = pickle.loads(pickle.dumps(arena["d"]))
        assert d["a"][1] == 2 and d["b"]["c"] == "x"
        assert json.loads(json.dumps(d, default=shmarena.to_json_default)) == {"a": [1, 2], "b": {"c": "x"}}
        assert "numpy" not in sys.modules
        assert "SharedArray" in dir(shmarena)
        import numpy as np
        with shmarena.build() as b:
            b.put_array("E", np.arange(6.0).reshape(2, 3))
        E = b.arena["E"]
        assert type(E) is shmarena.SharedArray
        back = pickle.loads(pickle.dumps(E[:, 1:]))
        assert type(back) is shmarena.SharedArray and back.tolist() == [[1.0, 2.0], [4.0, 5.0]]
        try:
            shmarena.no_such_name
        except AttributeError as e:
            assert "no_such_name" in str(e)
        else:
            raise AssertionError("no AttributeError")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_put_array_of_a_list_is_a_type_error_with_a_hint():
    with pytest.raises(TypeError, match=r"numpy array, not list: pass numpy\.asarray"):
        with shmarena.build() as b:
            b.put_array("x", [1.0])


def test_a_list_containing_itself_reports_a_cycle():
    a: list = [1]
    a.append(a)
    with pytest.raises(ValueError) as info:
        with shmarena.build() as b:
            b.put("x", a)
    msg = str(info.value)
    assert "cycle" in msg and len(msg) < 200, msg
    assert msg.startswith("value[1]: cycle"), msg
    d: dict = {"k": [0]}
    d["k"].append(d)
    with pytest.raises(ValueError, match=r'value\["k"\]\[1\]: cycle'):
        with shmarena.build() as b:
            b.put("x", d)
    # The same object twice, side by side, is no cycle.
    shared = [1, 2]
    with shmarena.build() as b:
        b.put("x", [shared, shared, {"a": shared}])
    assert b.arena["x"].to_python() == [[1, 2], [1, 2], {"a": [1, 2]}]


def test_too_deep_error_is_short():
    deep: list = []
    for _ in range(shmarena.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper") as info:
        with shmarena.build() as b:
            b.put("x", deep)
    assert len(str(info.value)) < 200


def test_documented_handle_sizes(closing, tmp_path, shm_name):
    """docs/PYTHON.md gives the pickled sizes; this measures them."""
    value = {"apple": ("fruit", 0.9), "deep": {"x": [[1, 2, [3, [4, [5]]]]]}}
    sizes = []
    with shmarena.build(name=shm_name) as b:
        b.put("lexicon", value)
    named = b.arena
    with shmarena.build() as b:
        b.put("lexicon", value)
        b.put_array("centroids", np.zeros((1000, 64), dtype=np.float32))
    memfd = b.arena
    closing(memfd)
    try:
        for arena in (memfd, named):
            lex = arena["lexicon"]
            for obj in (
                arena,
                lex,
                lex["apple"],
                lex["deep"]["x"][0][2][1][1],
                lex["deep"]["x"][0][1:3],
            ):
                sizes.append(len(pickle.dumps(obj)))
        sizes.append(len(pickle.dumps(memfd["centroids"])))
        sizes.append(len(pickle.dumps(memfd["centroids"][10:20, ::2])))
    finally:
        named.close()
    # memfd locators carry the pid (up to 7 digits) and segment names up to 30 bytes; the memfd
    # arena's pickles (the first five) also carry the trust token of its one archived entry
    # (44 bytes: build identity, memfd inode, one row), the named arena's none.
    token = 44
    assert min(sizes) >= 60 and max(sizes[:5]) <= 100 + token, sizes
    assert max(sizes[5:-1]) <= 100, sizes
    assert sizes[-1] < 200, sizes

"""Issue 11 from Python: a builder is pinned to its process, and `shmarena.open` never maps a
mutable backing unless the caller promises no concurrent writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import shmarena


def _scribble(path, start):
    """Rewrites a segment or file from `start` on, as any process of the user can."""
    os.chmod(path, 0o600)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * (size - start))


@pytest.mark.parametrize("named", [False, True])
def test_builder_refuses_in_a_fork_child(shm_name, named):
    kwargs = {"name": shm_name} if named else {}
    b = shmarena.build(**kwargs)
    b.put("before", {"a": 1})
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every use refuses with the typed error; exit code says which failed
        os.close(r)
        code = 0
        for i, call in enumerate(
            [
                lambda: b.put("child", {"x": 2}),
                lambda: b.put_array("arr", np.arange(1000, dtype=np.int64)),
                lambda: b.seal(),
            ]
        ):
            try:
                call()
                code |= 1 << i
            except shmarena.WrongProcessError as e:
                if "after fork" not in str(e):
                    code |= 8 << i
            except BaseException:  # noqa: BLE001 - report, do not unwind into pytest
                code |= 64
        b.discard()  # drop in the child: must unmap, truncate and unlink nothing
        os.write(w, b"x")
        os._exit(code)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    if named:
        assert os.path.exists(f"/dev/shm/{shm_name}"), "the child unlinked the parent's segment"
    # The parent's builder is intact.
    b.put("after", [1, 2, 3])
    b.put_array("arr", np.arange(10, dtype=np.int64))
    arena = b.seal()
    assert arena["before"]["a"] == 1
    assert arena["after"].to_python() == [1, 2, 3]
    assert arena["arr"].tolist() == list(range(10))
    arena.close()


def _build_elsewhere(shm_name, code):
    """Builds a named segment in another process, which leaves it behind (`os._exit`)."""
    script = textwrap.dedent(
        f"""
        import os, shmarena
        b = shmarena.build(name={shm_name!r})
        {code}
        b.seal()
        os._exit(0)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert os.path.exists(f"/dev/shm/{shm_name}")


def test_open_copies_a_named_segment_by_default(shm_name):
    _build_elsewhere(shm_name, 'b.put("lexicon", {f"w{i}": i for i in range(500)})')
    try:
        copy = shmarena.open(name=shm_name)
        assert "memfd" in repr(copy), repr(copy)
        assert copy["lexicon"]["w7"] == 7
        # Another writer rewrites the segment: the copy does not change.
        _scribble(f"/dev/shm/{shm_name}", 128)
        assert copy["lexicon"]["w499"] == 499
        assert len(copy["lexicon"]) == 500
        copy.close()
        with pytest.raises(shmarena.ShmarenaError):
            shmarena.open(name=shm_name)
    finally:
        os.unlink(f"/dev/shm/{shm_name}")


def test_open_in_place_takes_the_promise(shm_name, tmp_path):
    _build_elsewhere(shm_name, 'b.put("xs", [1, 2, 3])')
    try:
        for in_place, where in [(True, "shm segment"), (False, "memfd")]:
            a = shmarena.open(name=shm_name, no_concurrent_writers=in_place)
            assert where in repr(a), repr(a)
            assert a["xs"].to_python() == [1, 2, 3]
            a.close()
    finally:
        os.unlink(f"/dev/shm/{shm_name}")
    path = tmp_path / "x.arena"
    with shmarena.build(path=str(path)) as fb:
        fb.put("ys", [4, 5])
    fb.arena.close()
    for in_place, where in [(False, "memfd"), (True, "file")]:
        a = shmarena.open(path=str(path), no_concurrent_writers=in_place)
        assert where in repr(a), repr(a)
        assert a["ys"].to_python() == [4, 5]
        a.close()


def test_open_refuses_a_fifo_promptly(tmp_path):
    fifo = tmp_path / "fifo.arena"
    os.mkfifo(fifo)
    for in_place in (False, True):
        with pytest.raises(shmarena.ShmarenaError, match="not a regular file|cannot read"):
            shmarena.open(path=str(fifo), no_concurrent_writers=in_place)


_ATTACK = r"""
import glob, os, sys, shmarena
target, how, where = sys.argv[1], sys.argv[2], sys.argv[3]
kwargs = {"name": where} if target == "named" else {"path": where} if target == "file" else {}
b = shmarena.build(**kwargs)
b.put("v", [7] * 1000)
victims = []
for fd in os.listdir("/proc/self/fd"):
    try:
        if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shmarena"):
            victims.append(f"/proc/self/fd/{fd}")
    except OSError:
        pass
if target == "named":
    victims.append(f"/dev/shm/{where}")
elif target == "file":
    victims += glob.glob(os.path.join(os.path.dirname(where), ".*.building-*"))
    assert len(victims) >= 1, victims
for path in victims:
    try:
        with open(path, "r+b") as f:
            if how == "rewrite":
                f.seek(128)
                f.write(b"\xff" * 65536)
            else:
                f.truncate(0)
        print(path, "changed")
    except OSError as e:
        print(path, "refused:", e)
b.put("after", list(range(100)))
a = b.seal()
v = a["v"]
try:
    v[10**7]
    raise SystemExit("an index past the end did not raise")
except IndexError:
    pass
assert len(v) == 1000 and v.to_python() == [7] * 1000, len(v)
assert a["after"].to_python() == list(range(100))
if target == "named":
    again = shmarena.open(name=where)
elif target == "file":
    again = shmarena.open(path=where)
else:
    again = a
assert again["v"].to_python() == [7] * 1000
print("OK")
"""


@pytest.mark.parametrize("how", ["rewrite", "truncate"])
@pytest.mark.parametrize("target", ["memfd", "named", "file"])
def test_bytes_cannot_change_while_building(shm_name, tmp_path, target, how):
    """Issue 20, paths 1 to 3: another writer rewrites or truncates the building memfd, the
    named segment or the file's temporary file between `put` and `seal`; the arena still reads
    what was put (before: SIGSEGV or SIGBUS). Runs in a child, where a signal cannot kill
    pytest."""
    where = shm_name if target == "named" else str(tmp_path / "x.arena")
    out = subprocess.run(
        [sys.executable, "-c", _ATTACK, target, how, where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "OK" in out.stdout, (out.returncode, out.stdout, out.stderr)
    if target == "file":
        os.unlink(where)
    assert os.listdir(tmp_path) == []


def test_load_returns_the_file_it_was_given(tmp_path):
    """`shmarena.load` of an image whose arena id is that of an arena open here returns a copy
    of that file, not the arena already open."""
    path = tmp_path / "a.arena"
    with shmarena.build() as b:
        b.put("xs", [1, 2, 3])
    built = b.arena
    built.save(str(path))
    loaded = shmarena.load(str(path))
    assert repr(loaded) != repr(built), repr(loaded)
    built.close()
    assert loaded["xs"].to_python() == [1, 2, 3]
    loaded.close()

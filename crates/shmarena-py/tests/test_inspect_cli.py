"""`python -m shmarena` and the `shmarena-inspect` script: the arena-inspect commands from the
wheel, compared with the `arena-inspect` binary (ARENA_INSPECT) on the same arenas."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import shmarena
from shmarena.__main__ import main

BINARY = os.environ.get("ARENA_INSPECT")
needs_binary = pytest.mark.skipif(
    not BINARY,
    reason="set ARENA_INSPECT to the arena-inspect binary to compare with it (ci.sh builds it)",
)
MODULE = [sys.executable, "-m", "shmarena"]


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def ours(listing: str) -> list[dict]:
    """The rows of `list --json` for arenas this process built, without their age (which moves
    between two runs)."""
    rows = [r for r in json.loads(listing) if r["owner_pid"] == os.getpid()]
    for r in rows:
        del r["age_secs"]
    return sorted(rows, key=lambda r: r["arena"])


def stable(output: str) -> str:
    """`info` output without what differs between two runs on the same file: the memfd the
    inspecting process loaded it into, and the age of the arena."""
    if output.startswith("{"):
        doc = json.loads(output)
        doc.pop("locator", None)
        return json.dumps(doc, indent=2)
    return re.sub(r"created .* ago", "created (age) ago", output)


@pytest.fixture
def arena_file(tmp_path, closing):
    """An arena image file with an array entry and a dict entry."""
    with shmarena.build() as b:
        b.put_array("weights", np.arange(50_000, dtype=np.int64))
        b.put("lexicon", {"apple": ("fruit", 0.9)})
    closing(b.arena)
    path = tmp_path / "lex.arena"
    b.arena.save(path)
    return path


def damaged(path: Path, tmp_path: Path) -> dict[str, Path]:
    """Damaged copies of an arena file: a flipped payload byte, cut short, not an arena."""
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    out = {
        "flipped": flipped,
        "truncated": data[: len(data) // 3],
        "not-an-arena": b"hello, not an arena\n" * 100,
    }
    paths = {}
    for name, content in out.items():
        p = tmp_path / f"{name}.arena"
        p.write_bytes(bytes(content))
        paths[name] = p
    return paths


@needs_binary
def test_list_json_agrees_with_the_binary_on_a_live_arena(shm_name, closing):
    with shmarena.build(name=shm_name) as b:
        b.put("lexicon", {"apple": ("fruit", 0.9)})
        b.put_array("weights", np.ones(1000, dtype=np.float32))
    closing(b.arena)
    module, binary = run(MODULE, "list", "--json"), run([BINARY], "list", "--json")
    assert module.returncode == binary.returncode == 0, (module.stderr, binary.stderr)
    rows = ours(module.stdout)
    assert f"shm:{shm_name}" in [r["arena"] for r in rows], module.stdout
    assert rows == ours(binary.stdout)


@needs_binary
def test_verify_exit_codes_and_output_match_the_binary(arena_file, tmp_path):
    cases = {"intact": arena_file, **damaged(arena_file, tmp_path)}
    cases["missing"] = tmp_path / "no-such.arena"
    codes = {}
    for name, path in cases.items():
        for json_flag in ([], ["--json"]):
            module = run(MODULE, "verify", *json_flag, str(path))
            binary = run([BINARY], "verify", *json_flag, str(path))
            assert module.returncode == binary.returncode, (name, module.stderr, binary.stderr)
            assert module.stdout == binary.stdout, name
            assert module.stderr == binary.stderr, name
            codes[name] = module.returncode
    # The statuses the binary documents: 0 ok, 1 corrupt or not an arena, 2 cannot open.
    assert codes == {"intact": 0, "flipped": 1, "truncated": 1, "not-an-arena": 1, "missing": 2}


@needs_binary
@pytest.mark.parametrize(
    "args",
    [
        ["info", "{file}"],
        ["info", "--json", "{file}"],
        ["dump", "{file}", "lexicon"],
        ["dump", "--json", "{file}", "weights", "--range", "10..20"],
        ["no-such-command"],
        ["--version"],
    ],
)
def test_other_commands_print_what_the_binary_prints(arena_file, args):
    args = [a.format(file=arena_file) for a in args]
    module, binary = run(MODULE, *args), run([BINARY], *args)
    assert module.returncode == binary.returncode, (module.stderr, binary.stderr)
    assert stable(module.stdout) == stable(binary.stdout)
    # Usage errors name the program: arena-inspect's usage text says `python -m shmarena`.
    assert module.stderr == binary.stderr.replace("Usage: arena-inspect", "Usage: python -m shmarena")


def test_verify_exit_codes_without_the_binary(arena_file, tmp_path):
    """The statuses the binary documents, from the wheel alone (no ARENA_INSPECT needed)."""
    paths = damaged(arena_file, tmp_path)
    assert run(MODULE, "verify", str(arena_file)).returncode == 0
    for name in ("flipped", "truncated", "not-an-arena"):
        r = run(MODULE, "verify", str(paths[name]))
        assert r.returncode == 1, (name, r.stdout, r.stderr)
    r = run(MODULE, "verify", str(tmp_path / "no-such.arena"))
    assert r.returncode == 2
    assert r.stderr.startswith("arena-inspect: cannot open "), r.stderr
    assert run(MODULE, "no-such-command").returncode == 2


def test_version_is_the_packages():
    r = run(MODULE, "--version")
    assert (r.returncode, r.stdout) == (0, f"arena-inspect {shmarena.__version__}\n")


def test_console_script_is_installed_and_runs(arena_file):
    script = Path(sysconfig.get_path("scripts")) / "shmarena-inspect"
    assert script.is_file(), f"{script} missing: the wheel's console script was not installed"
    via_script, via_module = run([str(script)], "info", str(arena_file)), run(MODULE, "info", str(arena_file))
    assert via_script.returncode == via_module.returncode == 0, via_script.stderr
    assert stable(via_script.stdout) == stable(via_module.stdout)
    assert "weights" in via_script.stdout and "lexicon" in via_script.stdout
    usage = run([str(script)], "no-such-command")
    assert usage.returncode == 2 and "Usage: shmarena-inspect" in usage.stderr, usage.stderr


def test_closed_pipe_is_not_an_error(arena_file):
    """`python -m shmarena dump ... | head -1`: the reader goes away after one line, far into an
    output much larger than a pipe's buffer; the command ends with status 0 and says nothing on
    stderr (no BrokenPipeError from Python at exit), as the binary does."""
    for cmd in [MODULE] + ([[BINARY]] if BINARY else []):
        proc = subprocess.Popen(
            [*cmd, "dump", str(arena_file), "weights", "--range", "..", "--format", "csv"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, (cmd, err)
        assert first and err == b"", (cmd, first, err)


def test_piped_output_comes_after_what_python_printed(arena_file):
    """Python's own buffered output is flushed before the Rust code writes to the descriptor."""
    code = (
        "import sys; from shmarena.__main__ import main; print('before'); "
        f"rc = main(['info', {str(arena_file)!r}]); print('after', rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "before" and lines[-1] == "after 0", r.stdout
    middle = r.stdout.replace("before\n", "").replace("after 0\n", "")
    assert stable(middle) == stable(run(MODULE, "info", str(arena_file)).stdout)


def test_main_in_process_writes_to_redirected_streams(arena_file, tmp_path):
    """Called from Python with sys.stdout/sys.stderr replaced (a notebook, pytest's capture,
    contextlib.redirect_stdout), main() writes to those objects, not to the descriptors."""
    expected = run(MODULE, "info", "--json", str(arena_file)).stdout
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["info", "--json", str(arena_file)]) == 0
        assert main(["verify", str(tmp_path / "no-such.arena")]) == 2
    assert stable(out.getvalue()) == stable(expected)
    assert json.loads(out.getvalue())["entries"]
    assert err.getvalue().startswith("arena-inspect: cannot open "), err.getvalue()
    # A text stream with a binary buffer gets the bytes unchanged.
    raw = io.BytesIO()
    wrapped = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    with contextlib.redirect_stdout(wrapped):
        assert main(["dump", str(arena_file), "weights", "--range", "0..3", "--format", "csv"]) == 0
    wrapped.flush()
    assert raw.getvalue().decode() == run(
        MODULE, "dump", str(arena_file), "weights", "--range", "0..3", "--format", "csv"
    ).stdout

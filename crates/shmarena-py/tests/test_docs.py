"""Every Python code block in README.md, docs/*.md and this crate's README runs as written, each
in a fresh interpreter (as a script file, so that forkserver and spawn workers can import it);
and the Python examples run.

A block that cannot run on its own is marked in its info string with the reason:
```` ```python no-run: <why> ````. Keep that rare: a reader copies blocks as they are.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 180

# ```lang rest-of-info-string ... ``` (fences of three or more backticks, not indented).
FENCE = re.compile(r"^(`{3,})([^`\n]*)\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
PYTHON = {"python", "py", "python3"}


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files.append(ROOT / "crates" / "shmarena-py" / "README.md")
    return [f for f in files if f.exists()]


def python_blocks() -> list[tuple[str, str, str]]:
    """(id, info string, code) of every Python block, id being `file:line`."""
    out = []
    for f in doc_files():
        text = f.read_text()
        for m in FENCE.finditer(text):
            info = m.group(2).strip()
            lang = info.split(None, 1)[0] if info else ""
            if lang.lower() not in PYTHON:
                continue
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{f.relative_to(ROOT)}:{line}", info, m.group(3)))
    return out


BLOCKS = python_blocks()


def test_the_docs_have_python_blocks():
    # Guards the extraction itself: docs/PYTHON.md's Example and the crate README's at least.
    ids = [b[0] for b in BLOCKS]
    assert any(i.startswith("docs/PYTHON.md") for i in ids), ids
    assert any(i.startswith("crates/shmarena-py/README.md") for i in ids), ids


@pytest.mark.parametrize("where,info,code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_python_block_runs_as_written(where, info, code, tmp_path):
    rest = info.split(None, 1)[1] if " " in info.strip() else ""
    if rest.startswith("no-run"):
        reason = rest[len("no-run") :].lstrip(": ").strip()
        assert reason, f"{where}: a no-run block must say why (```python no-run: <why>)"
        pytest.skip(f"{where}: {reason}")
    script = tmp_path / "block.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, f"{where} failed:\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr, f"{where}:\n{out.stderr[-3000:]}"


@pytest.mark.parametrize("name", ["features.py"])
def test_python_example_runs(name):
    example = ROOT / "examples" / "python" / name
    out = subprocess.run(
        [sys.executable, "-W", "always", str(example)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=os.path.dirname(example),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Warning" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]

"""What the installed distribution carries: its version, metadata, typing files and the
extension built for this interpreter."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import shmarena

CRATE = Path(__file__).resolve().parents[1]
ROOT = CRATE.parents[1]


def test_version_is_the_crates_and_the_wheels():
    cargo = (ROOT / "Cargo.toml").read_text()
    # [workspace.package] version = "X.Y.Z": the crate's, which maturin writes into the wheel.
    line = next(l for l in cargo.splitlines() if l.startswith("version = "))
    assert shmarena.__version__ == line.split('"')[1]
    assert md.version("shmarena") == shmarena.__version__


def test_metadata_names_this_python_license_and_urls():
    meta = md.metadata("shmarena")
    classifiers = meta.get_all("Classifier") or []
    here = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert here in classifiers, f"{here} is tested but not among the classifiers"
    assert "Typing :: Typed" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License-Expression"] == "MIT OR Apache-2.0"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Repository", "Documentation", "Changelog"} <= set(urls), urls
    assert meta["Description-Content-Type"].startswith("text/markdown")
    # PyPI shows the README: it must not point into the repository with relative links.
    assert "](../" not in meta["Description"] and "](docs/" not in meta["Description"]


def test_typing_files_and_entry_points_are_installed():
    files = {str(f) for f in md.files("shmarena") or []}
    for name in ("py.typed", "_native.pyi", "__main__.py", "__init__.py"):
        assert f"shmarena/{name}" in files, f"shmarena/{name} is not in the installed files"
    scripts = {e.name: e.value for e in md.entry_points(group="console_scripts")}
    assert scripts.get("shmarena-inspect") == "shmarena.__main__:cli"


def test_extension_is_abi3_from_python_311():
    """One abi3 library serves CPython 3.11 and newer; 3.10 has a wheel of its own."""
    native = Path(shmarena._native.__file__).name
    if sys.version_info >= (3, 11):
        assert native == "_native.abi3.so", native
    else:
        assert native.startswith("_native.cpython-310"), native



SUBINTERPRETER = """
import sys
try:
    import _interpreters as interp  # 3.13+
except ImportError:
    import _xxsubinterpreters as interp

def import_in_subinterpreter(legacy):
    if hasattr(interp, "exec"):
        iid = interp.create("legacy" if legacy else "isolated")
    else:
        iid = interp.create(isolated=not legacy)
    try:
        if hasattr(interp, "exec"):
            err = interp.exec(iid, "import shmarena")
            return None if err is None else err.formatted
        try:
            interp.run_string(iid, "import shmarena")
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None
    finally:
        interp.destroy(iid)

if sys.argv[1] == "main-first":
    import shmarena
for legacy in (True, False):
    print(import_in_subinterpreter(legacy))
if sys.argv[1] == "sub-first":
    try:
        import shmarena
        print("main: imported")
    except ImportError as e:
        print(f"main: ImportError: {e}")
"""


def test_subinterpreters_cannot_import_it():
    """A second interpreter in the process gets an ImportError, never a module whose types and
    caches belong to another interpreter: isolated ones (CPython refuses a module without
    per-interpreter support) and legacy ones sharing the main GIL (the module's own check)."""
    out = subprocess.run(
        [sys.executable, "-c", SUBINTERPRETER, "main-first"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    legacy, isolated = out.stdout.splitlines()
    assert "ImportError" in legacy and "subinterpreters are not supported" in legacy, legacy
    if sys.version_info >= (3, 12):  # isolated interpreters (own GIL) exist from 3.12
        assert "ImportError" in isolated, isolated
    # The first importer wins: a subinterpreter that imported it first keeps the main one out.
    out = subprocess.run(
        [sys.executable, "-c", SUBINTERPRETER, "sub-first"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("main: ImportError"), out.stdout

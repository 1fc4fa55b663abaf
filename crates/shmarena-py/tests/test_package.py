"""What the installed distribution carries: its version, metadata, typing files and the
extension built for this interpreter."""

from __future__ import annotations

import importlib.metadata as md
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


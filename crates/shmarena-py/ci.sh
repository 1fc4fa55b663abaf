#!/usr/bin/env bash
# Builds the Python bindings the way a user installs them, runs their pytest suite (which also
# runs every Python block of the docs and the examples), and type-checks examples/python with
# mypy against the installed package's stubs.
# Run from anywhere: `bash crates/shmarena-py/ci.sh`. Needs python3 (>= 3.11) with venv and
# network access to PyPI for maturin, numpy, pytest, mypy and the engines the integration tests
# drive (dask[distributed], joblib, ray). If ray cannot be installed, its tests skip and say why
# (`-rs` prints each skip's reason).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"

"$py" -c 'import sys; assert sys.version_info >= (3, 11), "shmarena needs Python >= 3.11"'
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install 'maturin>=1.16,<2' 'numpy>=1.23' 'pytest>=7' 'pytest-timeout>=2' 'mypy>=1.10'
# The engines of tests/test_engines.py and tests/test_dask_plugin.py (shmarena.dask, shmarena.ray).
"${pip[@]}" install 'dask[distributed]>=2024.1' 'joblib>=1.3'
# pandas: tests/test_pandas.py and the to_pandas block of docs/PYTHON.md (issue 23).
"${pip[@]}" install 'pandas>=2.0'
"${pip[@]}" install 'ray>=2.9' || echo "ray could not be installed for $("$py" --version): its tests will skip"
# shmarena.torch (tests/test_torch.py, docs/TORCH.md): PyPI's torch wheel (with its CUDA libraries,
# about 5 GB; 149 s to install on the 2-core test machine). If it cannot be installed, those tests skip.
"${pip[@]}" install 'torch>=2.1' || echo "torch could not be installed for $("$py" --version): its tests will skip"
# maturin's build backend runs the `maturin` command, so the venv's bin must come first on PATH.
export PATH="$work/venv/bin:$PATH"
# The documented install command (with the maturin just installed, so nothing else is fetched).
"${pip[@]}" install --no-build-isolation "$here"

cd "$here"
rc=0
"$work/venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests || rc=$?
if [ "$rc" -ne 0 ]; then
    # 1: tests failed, 2: interrupted, 3: internal error, 4: usage error, 5: no tests collected.
    echo "python tests failed (pytest exit code $rc)"
    exit "$rc"
fi
# The documented patterns must type-check without casts (examples/python uses them).
if ! "$work/venv/bin/python" -m mypy --cache-dir "$work/mypy-cache" "$here/../../examples/python"; then
    echo "mypy found errors in examples/python"
    exit 1
fi

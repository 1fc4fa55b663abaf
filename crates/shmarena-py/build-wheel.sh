#!/usr/bin/env bash
# Builds the wheels pip users install without a compiler:
#
#   bash crates/shmarena-py/build-wheel.sh [OUT_DIR]      (default OUT_DIR: target/wheels)
#
# - shmarena-<v>-cp311-abi3-manylinux_2_17_x86_64.whl: one wheel for CPython 3.11 and newer
#   (the stable ABI, abi3, has the buffer protocol our numpy arrays read through from 3.11 on);
# - shmarena-<v>-cp310-cp310-manylinux_2_17_x86_64.whl: CPython 3.10, built against 3.10's
#   full ABI (`--no-default-features` turns the crate's `abi3` feature off).
#
# Both link against glibc 2.17 through zig (maturin's `--zig`, with the `ziglang` package from
# PyPI), so they install on any x86_64 Linux distribution with glibc 2.17 or newer (manylinux2014:
# CentOS 7, Debian 8, Ubuntu 14.04 and later) whatever the glibc of the build machine.
# `auditwheel show` checks each wheel's tag at the end.
#
# Needs: a Rust toolchain (the workspace's rust-version or newer), python3 (>= 3.10) with venv,
# network access to PyPI for maturin, ziglang and auditwheel (installed once into
# target/wheel-tools), and a CPython 3.10 for the cp310 wheel: $PYTHON310, else `python3.10` on
# PATH, else pyenv's 3.10. `--abi3-only` builds the abi3 wheel alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
abi3_only=0
out=""
for arg in "$@"; do
    case "$arg" in
        --abi3-only) abi3_only=1 ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-wheel.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) out="$arg" ;;
    esac
done
out="${out:-$root/target/wheels}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# shellcheck source=find-python.sh
. "$here/find-python.sh"

# The build tools, in a venv of their own that later runs reuse.
tools="$root/target/wheel-tools"
if [ ! -e "$tools/.complete" ]; then
    host_py="$(find_python 3.11 || find_python 3.12 || find_python 3.13 || find_python 3.10)" || {
        echo "build-wheel.sh: no CPython >= 3.10 found for the build tools' venv" >&2
        exit 1
    }
    rm -rf "$tools"
    "$host_py" -m venv "$tools"
    "$tools/bin/python" -m pip install --disable-pip-version-check --quiet \
        'maturin>=1.16,<2' 'ziglang>=0.13' 'auditwheel>=6'
    touch "$tools/.complete"
fi
maturin=("$tools/bin/maturin" build --release --zig --compatibility manylinux_2_17 --out "$out"
    --manifest-path "$here/Cargo.toml")
# maturin runs `python -m ziglang`; the tools' venv provides it.
export PATH="$tools/bin:$PATH"
# The wheel's library is stripped (pyproject.toml), so debug info would only cost build time.
export CARGO_PROFILE_RELEASE_DEBUG=0

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
rm -f "$out"/shmarena-"$version"-*.whl

echo "==> abi3 wheel (CPython >= 3.11)"
"${maturin[@]}" --interpreter "$tools/bin/python"
if [ "$abi3_only" -eq 0 ]; then
    echo "==> cp310 wheel (CPython 3.10)"
    py310="$(find_python 3.10)" || {
        echo "build-wheel.sh: no CPython 3.10 found for the cp310 wheel: set PYTHON310, put" \
            "python3.10 on PATH, or pass --abi3-only" >&2
        exit 1
    }
    "${maturin[@]}" --no-default-features --interpreter "$py310"
fi

echo "==> auditwheel show"
status=0
for whl in "$out"/shmarena-"$version"-*.whl; do
    report="$("$tools/bin/auditwheel" show "$whl" 2>&1)" || true
    tag="$(grep -o '"manylinux_[0-9_]*x86_64"' <<<"$report" | head -1 | tr -d '"')"
    if [ -z "$tag" ]; then
        echo "$report"
        echo "build-wheel.sh: auditwheel names no manylinux tag for $(basename "$whl")" >&2
        status=1
    else
        echo "$(basename "$whl"): auditwheel says $tag"
    fi
done
exit "$status"

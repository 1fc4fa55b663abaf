#!/usr/bin/env bash
# The Python bindings as pip users get them: builds the wheels (build-wheel.sh), installs them,
# not the source, into fresh venvs with no Rust toolchain on PATH, and runs the pytest suite
# (which also runs every Python block of the docs and the examples, and compares
# `python -m shmarena` with the arena-inspect binary) under each CPython:
#
#   full suite   CPython 3.11: requirements-test-full.txt (the dask, joblib and ray engine
#                tests too), then mypy on examples/python against the installed stubs;
#   smoke        CPython 3.10, 3.12 and 3.13: the same suite with requirements-test.txt only;
#                the engine tests and the two long conformance agreements (SHMARENA_SMOKE=1)
#                skip there and say so (`-rs`).
#
# Run from anywhere: `bash crates/shmarena-py/ci.sh`. Needs what build-wheel.sh needs (Rust,
# python3 with venv, PyPI), those four CPythons (python3.X on PATH, $PYTHON3X or pyenv's), and
# PyPI for the test dependencies. SHMARENA_CI_FULL=3.X and SHMARENA_CI_SMOKE="3.X ..." change the
# split; a CPython that cannot be found fails the run. ARENA_INSPECT names the arena-inspect
# binary the comparison tests run (.ci/run builds it); without it this script builds it with
# cargo, before the Rust-free phase.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
full="${SHMARENA_CI_FULL-3.11}"
smoke="${SHMARENA_CI_SMOKE-3.10 3.12 3.13}"
# shellcheck source=find-python.sh
. "$here/find-python.sh"

say() { printf '\n--- %s\n' "$*"; }
started=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Every interpreter first, so that a missing one fails before the long steps.
declare -A python_of
for v in $full $smoke; do
    python_of[$v]="$(find_python "$v")" || {
        echo "ci.sh: no CPython $v found (put python$v on PATH, set PYTHON${v/./}, or leave it" \
            "out of SHMARENA_CI_FULL / SHMARENA_CI_SMOKE)" >&2
        exit 1
    }
done

say "wheels: bash crates/shmarena-py/build-wheel.sh"
t=$SECONDS
bash "$here/build-wheel.sh" "$work/wheels"
echo "built in $((SECONDS - t)) s"

if [ -z "${ARENA_INSPECT:-}" ]; then
    say "arena-inspect binary for the comparison tests (cargo build -p arena-inspect)"
    (cd "$root" && cargo build -p arena-inspect)
    target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    ARENA_INSPECT="$target_dir/debug/arena-inspect"
fi
export ARENA_INSPECT
echo "ARENA_INSPECT=$ARENA_INSPECT"

# From here on no Rust: PATH without any directory that holds cargo, rustc or rustup.
rust_free_path=""
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [ -n "$d" ] || continue
    if [ -e "$d/cargo" ] || [ -e "$d/rustc" ] || [ -e "$d/rustup" ]; then
        continue
    fi
    rust_free_path="${rust_free_path:+$rust_free_path:}$d"
done
export PATH="$rust_free_path"
unset CARGO_HOME RUSTUP_HOME RUSTC CARGO
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "ci.sh: cargo or rustc is still on PATH ($PATH)" >&2
    exit 1
fi

# run_suite VERSION REQUIREMENTS [full]: a fresh venv, the wheel, the test dependencies, pytest.
run_suite() {
    local v="$1" reqs="$2" kind="${3:-smoke}" venv="$work/venv-$1" t rc=0
    say "CPython $v ($kind): ${python_of[$v]}"
    "${python_of[$v]}" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
    # Only wheels, from the directory build-wheel.sh wrote and from PyPI: nothing is compiled.
    t=$SECONDS
    "${pip[@]}" install --only-binary :all: --no-deps --no-index --find-links "$work/wheels" shmarena
    echo "installed the shmarena wheel in $((SECONDS - t)) s: $("$venv/bin/python" -m pip \
        --disable-pip-version-check list 2>/dev/null | grep -i '^shmarena ')"
    t=$SECONDS
    "${pip[@]}" install --only-binary :all: -r "$here/$reqs"
    echo "installed $reqs in $((SECONDS - t)) s"
    "$venv/bin/python" -c 'import shmarena, sys; print("import shmarena", shmarena.__version__, "on", sys.version.split()[0])'

    t=$SECONDS
    # The smoke runs leave out the two long conformance agreements (thousands of damaged arenas
    # judged by the bindings), which the full run does: SHMARENA_SMOKE=1 skips them, saying so.
    local smoke_flag=0
    [ "$kind" = full ] || smoke_flag=1
    (cd "$here" && SHMARENA_SMOKE=$smoke_flag "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests) || rc=$?
    if [ "$rc" -ne 0 ]; then
        # 1: tests failed, 2: interrupted, 3: internal error, 4: usage error, 5: no tests collected.
        echo "python tests failed on CPython $v (pytest exit code $rc)"
        exit "$rc"
    fi
    echo "CPython $v: suite passed in $((SECONDS - t)) s"
    if [ "$kind" = full ]; then
        # The documented patterns must type-check without casts (examples/python uses them).
        if ! "$venv/bin/python" -m mypy --cache-dir "$work/mypy-cache" "$root/examples/python"; then
            echo "mypy found errors in examples/python"
            exit 1
        fi
    fi
    rm -rf "$venv"
}

for v in $full; do
    run_suite "$v" requirements-test-full.txt full
done
for v in $smoke; do
    run_suite "$v" requirements-test.txt
done
say "python: full suite on ${full:-none}, smoke on ${smoke:-none}; $((SECONDS - started)) s in all"

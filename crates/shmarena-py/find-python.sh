# Sourced by build-wheel.sh and ci.sh: `find_python 3.10` prints the path of a working CPython
# 3.10 interpreter, or fails. It looks at $PYTHON310 (the version without its dot), then
# `python3.10` on PATH, then pyenv's installs of that version.
find_python() {
    local want="$1" var cand
    var="PYTHON${want/./}"
    for cand in "${!var:-}" "$(command -v "python$want" 2>/dev/null)" \
        "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$want".*/bin/"python$want"; do
        [ -n "$cand" ] && [ -x "$cand" ] || continue
        # pyenv's shims exist for every installed version but fail for those not selected.
        if "$cand" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" \
            >/dev/null 2>&1; then
            "$cand" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

"""`python -m shmarena` and `shmarena-inspect`: the arena-inspect commands for pip users.

    python -m shmarena list --json
    python -m shmarena verify /data/lexicon.arena    # exit 0 ok, 1 corrupt, 2 cannot open
    shmarena-inspect who lexicon

The commands (`list`, `info`, `verify`, `dump`, `who`, `published`, `gc`, each with `--json`)
run in arena-inspect's own Rust library, compiled into the wheel: the output and the exit
status are the `arena-inspect` binary's. `--help` lists them.
"""

from __future__ import annotations

import os
import signal
import sys

from . import _native

TYPE_CHECKING = False  # `typing` is not imported at run time
if TYPE_CHECKING:
    from typing import BinaryIO, Sequence, TextIO


class _TextSink:
    """A binary `write` over a text stream that has no `.buffer` (io.StringIO and the like)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        self._stream.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self._stream.flush()


def _target(stream: TextIO | None, fd: int) -> BinaryIO | _TextSink | None:
    """None if `stream` is this process's file descriptor `fd` (after flushing it, so that
    what Python printed before comes first), else a binary stream that writes to it."""
    if stream is None:  # pythonw, or closed by the embedding program: like a closed descriptor
        return None
    try:
        if stream.fileno() == fd:
            stream.flush()
            return None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        pass
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        return buffer  # type: ignore[no-any-return]
    return _TextSink(stream)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Runs one arena-inspect command line and returns its exit status: 0 ok; 1 the arena is
    corrupt, truncated, not an arena or (verify) not sealed; 2 usage error, not found,
    permission denied or another error. A closed pipe (`| head`) is not an error.

    `argv` defaults to `sys.argv[1:]` and `prog` (the name usage text shows) to the program's
    file name. Output goes to `sys.stdout` and `sys.stderr`, straight to the file descriptors
    when they are the process's own (the `shmarena-inspect` script, `python -m shmarena`).
    """
    if argv is None:
        argv = sys.argv[1:]
    if prog is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "shmarena-inspect"
    out, err = _target(sys.stdout, 1), _target(sys.stderr, 2)
    if out is None and err is None:
        return _native.inspect_main([prog, *argv])
    return _native.inspect_main([prog, *argv], out, err)


def cli(prog: str | None = None) -> None:
    """The console script and `python -m shmarena`: the process exits with the command's
    status. Ctrl-C stops a long command (verify of a large arena) at once, as it stops the
    binary, rather than after the command returns to Python."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(main(prog=prog))


if __name__ == "__main__":
    cli(prog="python -m shmarena")

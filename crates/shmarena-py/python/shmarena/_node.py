"""One published arena per host, for the engine integrations (``shmarena.dask``, ``shmarena.ray``).

A dataset is published under its name, or ``NAME.HOST`` when the ``SHMARENA_HOST_ID``
environment variable is set (so a test can run two "hosts" on one machine). The first process
on a host to ask takes an exclusive per-host lock (an abstract Unix socket
``shmarena-lock/<uid>/<published name>``: it needs no file and vanishes with its holder), loads
the image or calls the build function, and publishes; the others wait for the name and connect.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable

from ._native import AlreadyPublishedError, Arena, NotPublishedError, Publisher, connect, load

HOST_ID_ENV = "SHMARENA_HOST_ID"

#: How long a process waits for another one on its host to publish a dataset, in seconds.
DEFAULT_WAIT = 600.0


def host_id(env: dict[str, str] | None = None) -> str | None:
    """The host id override (``SHMARENA_HOST_ID``), from ``env`` if given, else this process."""
    value = (env if env is not None else os.environ).get(HOST_ID_ENV)
    return value or None


def published_name(name: str, host: str | None = None) -> str:
    """The name a dataset is published under on ``host`` (None: this process's host id)."""
    host = host if host is not None else host_id()
    return f"{name}.{host}" if host else name


class HostLock:
    """An exclusive per-host lock named after a published name: an abstract Unix socket that
    only one process can bind. Released by ``release()`` or when the holder dies."""

    def __init__(self, published: str):
        self.address = f"\0shmarena-lock/{os.geteuid()}/{published}"
        self._sock: socket.socket | None = None

    def try_acquire(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(self.address)
        except OSError:
            s.close()
            return False
        self._sock = s
        return True

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def load_or_build(path: str | os.PathLike[str] | None, build: Callable[[], Arena] | None) -> Arena:
    """The arena a holder publishes: the image at ``path`` or what ``build()`` returns."""
    if (path is None) == (build is None):
        raise ValueError("give exactly one of path= (an arena image) or build= (a function returning an Arena)")
    if path is not None:
        return load(path)
    arena = build()  # type: ignore[misc]
    if not isinstance(arena, Arena):
        raise TypeError(f"the build function must return a shmarena.Arena, not {type(arena).__name__}")
    return arena


def load_bytes(image: bytes | memoryview) -> Arena:
    """Loads an arena image held in memory (e.g. from an engine's object store): written to a
    private temporary file (``load`` reads regular files only, and never follows a symlink such
    as ``/proc/self/fd/N``), loaded into a sealed memfd, and the file removed at once."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="shmarena-image-", suffix=".arena")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(image).cast("B"))
        return load(path)
    finally:
        os.unlink(path)


def ensure_published(
    published: str,
    make: Callable[[], Arena],
    *,
    wait: float = DEFAULT_WAIT,
) -> tuple[Arena, Publisher | None]:
    """Connects to ``published``, or, as the first process on the host, makes the arena and
    publishes it. Returns the arena and the publisher (None if another process publishes)."""
    lock = HostLock(published)
    deadline = time.monotonic() + wait
    while True:
        try:
            return connect(published), None
        except NotPublishedError:
            pass
        if lock.try_acquire():
            try:
                try:  # published between our connect and the lock?
                    return connect(published), None
                except NotPublishedError:
                    pass
                arena = make()
                try:
                    return arena, arena.publish(published)
                except AlreadyPublishedError:
                    return connect(published), None
            finally:
                lock.release()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no process published {published!r} within {wait} s")
        time.sleep(0.05)


_cache: dict[str, Arena] = {}
_cache_lock = threading.Lock()


def cached_connect(published: str, wait: float = DEFAULT_WAIT) -> Arena:
    """The arena published as ``published``, connected once per process and kept. Waits up to
    ``wait`` seconds for a holder that has not published yet."""
    arena = _cache.get(published)
    if arena is not None:
        return arena
    with _cache_lock:
        arena = _cache.get(published)
        if arena is not None:
            return arena
        deadline = time.monotonic() + wait
        while True:
            try:
                arena = connect(published)
                break
            except NotPublishedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        _cache[published] = arena
        return arena


def forget(published: str | None = None) -> None:
    """Drops cached connections (all of them, or one published name)."""
    with _cache_lock:
        if published is None:
            _cache.clear()
        else:
            _cache.pop(published, None)

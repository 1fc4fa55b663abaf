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

#: How long a process waits for another one on its host to publish a dataset, in seconds, while
#: that one holds the host's lock (it is loading the image or building).
DEFAULT_WAIT = 600.0
#: How long ``cached_connect`` waits when nothing publishes the name and no process holds the
#: host's lock (a misspelt name, a plugin never registered) before it gives up, in seconds.
NO_HOLDER_GRACE = 2.0


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

    def held_elsewhere(self) -> bool:
        """Whether another holder has the lock now (binding it for an instant to find out)."""
        if self._sock is not None:
            return False
        if self.try_acquire():
            self.release()
            return False
        return True


class FailureNotice:
    """Tells the processes of this host why publishing ``published`` failed here, for as long
    as this process lives or until ``close()``: an abstract Unix socket
    ``shmarena-failed/<uid>/<published>`` whose daemon thread answers each connection with the
    error text. ``read_failure`` is the other end."""

    def __init__(self, published: str, text: str):
        self.address = f"\0shmarena-failed/{os.geteuid()}/{published}"
        self.text = text.encode("utf-8", "replace")[:4096]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(self.address)
        except OSError:
            self._sock.close()  # another process of the host failed first and says so
            self._sock = None
            return
        self._sock.listen(16)
        threading.Thread(target=self._serve, args=(self._sock,), name=f"shmarena-failed-{published}", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    conn.sendall(self.text)
                except OSError:
                    pass

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None


_failures: dict[str, FailureNotice] = {}


def withdraw_failure(published: str) -> None:
    """Stops telling readers that making ``published`` failed here (a plugin torn down)."""
    notice = _failures.pop(published, None)
    if notice is not None:
        notice.close()


def read_failure(published: str) -> str | None:
    """The error text a process of this host left when publishing ``published`` failed, or
    None if there is none."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(f"\0shmarena-failed/{os.geteuid()}/{published}")
        chunks = []
        while True:
            b = s.recv(4096)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace") or None
    except OSError:
        return None
    finally:
        s.close()


def published_on_this_host() -> list[str]:
    """Names published on this host by this user (from ``/proc/net/unix``), for error texts."""
    prefix = f"@shmarena/{os.geteuid()}/"
    names = []
    try:
        with open("/proc/net/unix") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                if path.startswith(prefix):
                    names.append(path[len(prefix) :])
    except OSError:
        return []
    return sorted(set(names))


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
                try:
                    arena = make()
                except BaseException as e:
                    # Tell the host's readers why, so that they fail at once with the cause.
                    withdraw_failure(published)
                    _failures[published] = FailureNotice(
                        published, f"process {os.getpid()} failed to make it: {type(e).__name__}: {e}"
                    )
                    raise
                withdraw_failure(published)
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
    """The arena published as ``published``, connected once per process and kept.

    Waits up to ``wait`` seconds while a process of this host holds the lock for the name (it
    is loading or building). Raises ``NotPublishedError`` at once with the cause if the host's
    holder failed (``FailureNotice``), and after ``NO_HOLDER_GRACE`` seconds if nothing
    publishes the name and nobody holds its lock."""
    arena = _cache.get(published)
    if arena is not None:
        return arena
    with _cache_lock:
        arena = _cache.get(published)
        if arena is not None:
            return arena
        start = time.monotonic()
        deadline = start + wait
        lock = HostLock(published)
        holder_seen = start
        while True:
            try:
                arena = connect(published)
                break
            except NotPublishedError as e:
                now = time.monotonic()
                failure = read_failure(published)
                if failure is not None:
                    raise NotPublishedError(
                        f"no arena is published as {published!r} on this host: {failure}"
                    ) from e
                if lock.held_elsewhere():
                    holder_seen = now
                elif now - holder_seen > min(NO_HOLDER_GRACE, wait):
                    others = published_on_this_host()
                    raise NotPublishedError(
                        f"no arena is published as {published!r} on this host, and no process "
                        f"is loading or building it (checked for {now - start:.1f} s): is the "
                        f"name right, and is the plugin or holder registered for it? Names "
                        f"published on this host by this user: {others or 'none'}"
                    ) from e
                if now > deadline:
                    raise NotPublishedError(
                        f"no arena is published as {published!r} on this host after {wait} s "
                        "(wait=); a process of the host is still loading or building it"
                    ) from e
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

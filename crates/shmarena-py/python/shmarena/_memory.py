"""A process's memory as an engine's memory limit should count it: its resident memory less
the resident pages of the shared arenas it maps.

Every process that reads an arena's pages has them in its resident set (RSS), although the host
holds them once; an engine that limits each worker's RSS charges a large arena to every worker
that reads it. ``process_memory(pid)`` is RSS less the shared-memory pages (``RssShmem``) of
the arenas the process maps, at most the size of those mappings:

- ``VmRSS`` and ``RssShmem`` come from ``/proc/PID/status`` (a few tens of microseconds);
- which mappings are arenas comes from ``/proc/PID/maps``: memfds named ``shmarena*`` (every
  built, loaded, copied or connected arena) and ``/dev/shm`` segments that start with the arena
  magic (named arenas opened in place). Reading ``maps`` costs about a millisecond in a Python
  worker with numpy, so its result is kept per process and read again only when the process's
  virtual size has changed (at most every ``MAPS_MIN_INTERVAL`` seconds) or on ``fresh=True``,
  which callers ask for before acting on a figure (pausing, restarting).

Shared memory that is not an arena's (``multiprocessing.shared_memory``, SysV segments) keeps
counting, except that the subtraction is bounded by the arenas' mapped size, not by which pages
of ``RssShmem`` are theirs (only ``/proc/PID/smaps`` tells that, at ~30 ms a read): a process
that has touched a small part of a large arena and also holds other shared memory can see up to
the untouched part of the arena left out of that other memory. Arena files mapped in place from
a disk file system (``open(path=..., no_concurrent_writers=True)``) are page cache (``RssFile``),
which this does not subtract: ``shmarena.load`` them into a memfd instead.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["process_memory", "arena_mapped_bytes", "status"]

#: The shortest time between two reads of a process's ``/proc/PID/maps`` when not ``fresh``.
MAPS_MIN_INTERVAL = 0.5
#: The longest time a ``maps`` figure is kept when nothing seems to have changed.
MAPS_MAX_AGE = 10.0

_MAGIC = b"SHMARENA"
_lock = threading.Lock()
# pid -> (VmSize when read, arena bytes mapped, monotonic time of the read)
_maps_cache: dict[int, tuple[int, int, float]] = {}
# /dev/shm path -> (inode, whether it starts with the arena magic)
_magic_cache: dict[str, tuple[int, bool]] = {}


def status(pid: int | None = None) -> dict[str, int]:
    """``VmRSS``, ``RssShmem`` and ``VmSize`` of ``pid`` (this process by default), in bytes."""
    want = {"VmRSS", "RssShmem", "VmSize"}
    out = {}
    with open(f"/proc/{pid or 'self'}/status", "rb") as f:
        for line in f:
            key, _, rest = line.partition(b":")
            k = key.decode()
            if k in want:
                out[k] = int(rest.split()[0]) * 1024
    return out


def _is_arena_segment(path: str) -> bool:
    try:
        st = os.stat(path)
        hit = _magic_cache.get(path)
        if hit is not None and hit[0] == st.st_ino:
            return hit[1]
        with open(path, "rb") as f:
            yes = f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False
    if len(_magic_cache) > 1024:
        _magic_cache.clear()
    _magic_cache[path] = (st.st_ino, yes)
    return yes


def _read_arena_mappings(pid: int | None) -> int:
    total = 0
    with open(f"/proc/{pid or 'self'}/maps", "rb") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            path = parts[5].rstrip(b"\n")
            if not (path.startswith(b"/memfd:shmarena") or path.startswith(b"/dev/shm/")):
                continue
            if path.startswith(b"/dev/shm/"):
                name = path.decode(errors="replace")
                if name.endswith(" (deleted)") or not _is_arena_segment(name):
                    continue
            lo, _, hi = parts[0].partition(b"-")
            total += int(hi, 16) - int(lo, 16)
    return total


def arena_mapped_bytes(pid: int | None = None, *, fresh: bool = False, vm_size: int | None = None) -> int:
    """Bytes of address space of ``pid`` mapping arenas (memfd and ``/dev/shm`` arenas),
    from ``/proc/PID/maps``; kept per process as the module docs say unless ``fresh``."""
    key = pid or os.getpid()
    now = time.monotonic()
    with _lock:
        hit = _maps_cache.get(key)
    if hit is not None and not fresh:
        size, total, when = hit
        age = now - when
        if age < MAPS_MIN_INTERVAL or (vm_size == size and age < MAPS_MAX_AGE):
            return total
    total = _read_arena_mappings(pid)
    with _lock:
        if len(_maps_cache) > 256:
            _maps_cache.clear()
        _maps_cache[key] = (vm_size if vm_size is not None else -1, total, now)
    return total


def process_memory(pid: int | None = None, *, fresh: bool = False) -> int:
    """Resident memory of ``pid`` (this process by default) less the resident shared pages of
    the arenas it maps, in bytes: ``VmRSS - min(RssShmem, arena mappings' size)``. Raises
    ``OSError`` (``ProcessLookupError``/``FileNotFoundError``) if the process is gone."""
    st = status(pid)
    rss = st.get("VmRSS", 0)
    shmem = st.get("RssShmem", 0)
    if shmem == 0:
        return rss
    mapped = arena_mapped_bytes(pid, fresh=fresh, vm_size=st.get("VmSize"))
    return rss - min(shmem, mapped)

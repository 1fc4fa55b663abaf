"""One arena per host under Dask: every worker on a host reads the same shared pages.

    import shmarena.dask
    client.register_plugin(shmarena.dask.Dataset("lexicon", path="/data/lexicon.arena"))

    def task(word):
        lexicon = shmarena.dask.get("lexicon")["lexicon"]   # connected once per worker process
        return lexicon.get(word)

``Dataset`` is a ``distributed.NannyPlugin``: on each host, the first nanny (an exclusive
per-host lock) loads the image (a local path or a shared file system) or calls ``build()`` and
publishes the arena by name (``shmarena.connect``); the nanny outlives its worker, so a worker
killed and restarted reconnects to the same pages. ``WorkerDataset`` does the same from a
worker process, for clusters run without nannies. Tasks reach the arena with ``get(name)``.

Set ``SHMARENA_HOST_ID`` (in the nanny's ``env=``, or the worker's environment) to run several
"hosts" on one machine: each publishes and reads its own copy, under ``NAME.HOST``.

Memory accounting: Dask limits each worker's resident memory (RSS), in which every arena page
the worker has read counts, although the host holds it once. Both plugins make the worker's
memory figure (pause, spill, the "unmanaged memory" the scheduler reports) and the nanny's
restart check count the worker's memory less the shared pages of the arenas it maps
(``shmarena._memory.process_memory``); a worker whose own heap exceeds its limit is still
paused and restarted. Importing this module registers ``dask.sizeof`` for views and arrays
(their pickled size). See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

from distributed.diagnostics.plugin import NannyPlugin, WorkerPlugin

from . import _memory, _node, _sizeof
from ._native import Arena, Publisher

__all__ = ["Dataset", "MemoryAccounting", "WorkerDataset", "get", "install_memory_accounting", "published_name"]

logger = logging.getLogger("shmarena.dask")
_sizeof.register_dask()

# The marker set on the functions this module installs, so that installing twice does nothing.
_MARK = "_shmarena_memory_accounting"


def _worker_threshold(worker: Any) -> float | None:
    """The lowest memory figure at which the worker acts (spill, pause), or None if unlimited."""
    mm = getattr(worker, "memory_manager", None)
    limit = getattr(mm, "memory_limit", None)
    if not limit:
        return None
    fractions = [
        getattr(mm, attr, False)
        for attr in ("memory_target_fraction", "memory_spill_fraction", "memory_pause_fraction")
    ]
    fractions = [f for f in fractions if f]
    return limit * min(fractions) if fractions else None


def install_memory_accounting(worker: Any) -> bool:
    """Makes ``worker`` (a ``distributed.Worker``, in its own process) measure its memory as
    its RSS less the resident shared pages of the arenas it maps: the figure its memory manager
    pauses and spills on and reports to the scheduler. Returns whether it is installed; warns
    and returns False if this version of distributed has no ``worker.monitor.get_process_memory``.
    Installing twice does nothing."""
    monitor = getattr(worker, "monitor", None)
    current = getattr(monitor, "get_process_memory", None)
    if current is None or not callable(current):
        logger.warning(
            "shmarena: this distributed version has no Worker.monitor.get_process_memory; "
            "arena pages count in the worker's memory (tested with distributed 2024.1 to 2026.8)"
        )
        return False
    if getattr(current, _MARK, False):
        return True

    def get_process_memory() -> int:
        try:
            memory = _memory.process_memory()
            threshold = _worker_threshold(worker)
            if threshold is not None and memory > threshold:
                memory = _memory.process_memory(fresh=True)  # before a pause or a spill
            return memory
        except OSError:
            return current()

    setattr(get_process_memory, _MARK, True)
    monitor.get_process_memory = get_process_memory
    return True


def _install_nanny_accounting(nanny: Any) -> bool:
    """Makes the nanny's restart check (``distributed.worker.memory.terminate``) count its
    worker's memory less the arena pages it maps. The nanny's periodic ``memory_monitor`` is
    wrapped: it runs (and restarts the worker as it would) only when that figure is above the
    limit. Returns whether it is installed (False when the nanny has no memory limit)."""
    callbacks = getattr(nanny, "periodic_callbacks", None)
    pc = callbacks.get("memory_monitor") if isinstance(callbacks, dict) else None
    mm = getattr(nanny, "memory_manager", None)
    if pc is None or mm is None or not hasattr(pc, "callback"):
        return False  # no memory limit, or no terminate fraction: nothing restarts the worker
    original = pc.callback
    if getattr(original, _MARK, False):
        return True

    def memory_monitor() -> Any:
        limit = getattr(mm, "memory_limit", None)
        fraction = getattr(mm, "memory_terminate_fraction", False)
        process = getattr(getattr(nanny, "process", None), "process", None)
        pid = getattr(process, "pid", None)
        if not limit or fraction is False or pid is None:
            return original()
        try:
            memory = _memory.process_memory(pid)
            if memory > limit * fraction:
                memory = _memory.process_memory(pid, fresh=True)
        except OSError:
            return original()
        if memory <= limit * fraction:
            return None
        # Above the limit without the arena pages: distributed's own check restarts it (its
        # RSS, which includes those pages, is at least as high).
        return original()

    setattr(memory_monitor, _MARK, True)
    pc.callback = memory_monitor
    return True


class _WorkerAccounting(WorkerPlugin):
    """Installs ``install_memory_accounting`` on every worker, present and future: what
    ``Dataset`` and ``MemoryAccounting`` register with the scheduler."""

    idempotent = True
    name = "shmarena-memory-accounting-worker"

    def setup(self, worker: Any) -> None:
        install_memory_accounting(worker)


class MemoryAccounting(NannyPlugin):
    """The memory accounting alone, for clusters whose workers read arenas they get some other
    way than ``Dataset`` (views or arrays passed as task arguments): in every nanny, the restart
    check, and through the scheduler, every worker's own figure. ``Dataset`` does the same."""

    idempotent = True
    restart = False
    name = "shmarena-memory-accounting"

    async def setup(self, nanny: Any) -> None:
        _install_nanny_accounting(nanny)
        await _register_worker_accounting(nanny)


def _install_in_this_worker() -> None:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    current = getattr(getattr(worker, "monitor", None), "get_process_memory", None)
    if current is not None and not getattr(current, _MARK, False):
        install_memory_accounting(worker)


def published_name(name: str) -> str:
    """The name this process's host publishes ``name`` under (``NAME`` or ``NAME.HOST``)."""
    return _node.published_name(name)


def get(name: str, *, wait: float = _node.DEFAULT_WAIT) -> Arena:
    """The dataset ``name`` as published on this host, connected once per process and kept
    (later calls are a dict lookup).

    While a process of this host is loading or building it (it holds the host's lock), waits up
    to ``wait`` seconds (default 600) for it. Raises ``NotPublishedError`` after about
    ``_node.NO_HOLDER_GRACE`` seconds (2) if nothing publishes the name and nothing is loading
    it (a misspelt name, a plugin never registered), and at once, with the cause, if the host's
    holder failed (a corrupt image, a build function that raised). In a Dask worker, the first
    call also installs the memory accounting (``install_memory_accounting``)."""
    arena = _node.cached_connect(_node.published_name(name), wait)
    _install_in_this_worker()
    return arena


class _Spec:
    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str] | None,
        build: Callable[[], Arena] | None,
        wait: float,
    ):
        if (path is None) == (build is None):
            raise ValueError("give exactly one of path= (an arena image) or build= (a function returning an Arena)")
        self.dataset = name
        self.path = os.fspath(path) if path is not None else None
        self.build = build
        self.wait = wait
        self.publisher: Publisher | None = None
        self.arena: Arena | None = None
        self._host: str | None = None

    def ensure(self, host: str | None) -> None:
        self._host = host
        published = _node.published_name(self.dataset, host)
        self.arena, self.publisher = _node.ensure_published(
            published, lambda: _node.load_or_build(self.path, self.build), wait=self.wait
        )

    def close(self) -> None:
        _node.withdraw_failure(_node.published_name(self.dataset, self._host))
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        self.arena = None

    def __getstate__(self) -> dict[str, Any]:
        # What the scheduler ships to each nanny or worker: the recipe, not a publisher.
        return {"dataset": self.dataset, "path": self.path, "build": self.build, "wait": self.wait}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Spec.__init__(self, state["dataset"], state["path"], state["build"], state["wait"])


async def _register_worker_accounting(nanny: Any) -> None:
    """Registers ``_WorkerAccounting`` with the scheduler, which installs it on every worker,
    present and future (restarted ones too). Idempotent: the first nanny's call does it."""
    from distributed.protocol.pickle import dumps

    scheduler = getattr(nanny, "scheduler", None)
    if scheduler is None:
        logger.warning("shmarena: nanny without a scheduler connection; workers keep counting arena pages")
        return
    plugin = _WorkerAccounting()
    await scheduler.register_worker_plugin(plugin=dumps(plugin), name=plugin.name, idempotent=True)


class Dataset(_Spec, NannyPlugin):
    """A nanny plugin that publishes the dataset ``name`` once per host.

    Give exactly one of ``path`` (an arena image file, see ``Arena.save``; read on each host)
    or ``build`` (a picklable function returning an ``Arena``, called once per host). The
    nanny that publishes serves the name until it closes; its worker restarts do not matter.
    """

    idempotent = True
    restart = False

    def __init__(
        self,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        build: Callable[[], Arena] | None = None,
        wait: float = _node.DEFAULT_WAIT,
    ):
        _Spec.__init__(self, name, path, build, wait)
        self.name = f"shmarena-{name}"

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Spec.__setstate__(self, state)
        self.name = f"shmarena-{state['dataset']}"

    async def setup(self, nanny: Any) -> None:
        host = _node.host_id(getattr(nanny, "env", None) or {}) or _node.host_id()
        # Before anything is read: the nanny's restart check, then every worker's own figure.
        _install_nanny_accounting(nanny)
        await _register_worker_accounting(nanny)
        # Loading an image or building runs off the nanny's event loop.
        await asyncio.get_running_loop().run_in_executor(None, self.ensure, host)

    def teardown(self, nanny: Any) -> None:
        self.close()


class WorkerDataset(_Spec, WorkerPlugin):
    """The same as ``Dataset``, published from a worker process (for clusters without nannies).

    If the publishing worker dies, workers already connected keep reading; the next worker to
    start on that host loads or builds the dataset again and publishes it.
    """

    idempotent = True

    def __init__(
        self,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        build: Callable[[], Arena] | None = None,
        wait: float = _node.DEFAULT_WAIT,
    ):
        _Spec.__init__(self, name, path, build, wait)
        self.name = f"shmarena-worker-{name}"

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Spec.__setstate__(self, state)
        self.name = f"shmarena-worker-{state['dataset']}"

    async def setup(self, worker: Any) -> None:
        install_memory_accounting(worker)
        await asyncio.get_running_loop().run_in_executor(None, self.ensure, _node.host_id())
        if self.arena is not None:
            _node._cache.setdefault(_node.published_name(self.dataset), self.arena)

    def teardown(self, worker: Any) -> None:
        self.close()

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
See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

from distributed.diagnostics.plugin import NannyPlugin, WorkerPlugin

from . import _node
from ._native import Arena, Publisher

__all__ = ["Dataset", "WorkerDataset", "get", "published_name"]


def published_name(name: str) -> str:
    """The name this process's host publishes ``name`` under (``NAME`` or ``NAME.HOST``)."""
    return _node.published_name(name)


def get(name: str, *, wait: float = _node.DEFAULT_WAIT) -> Arena:
    """The dataset ``name`` as published on this host, connected once per process and kept
    (later calls are a dict lookup). Waits up to ``wait`` seconds for the host's holder."""
    return _node.cached_connect(_node.published_name(name), wait)


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

    def ensure(self, host: str | None) -> None:
        published = _node.published_name(self.dataset, host)
        self.arena, self.publisher = _node.ensure_published(
            published, lambda: _node.load_or_build(self.path, self.build), wait=self.wait
        )

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        self.arena = None

    def __getstate__(self) -> dict[str, Any]:
        # What the scheduler ships to each nanny or worker: the recipe, not a publisher.
        return {"dataset": self.dataset, "path": self.path, "build": self.build, "wait": self.wait}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Spec.__init__(self, state["dataset"], state["path"], state["build"], state["wait"])


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
        await asyncio.get_running_loop().run_in_executor(None, self.ensure, _node.host_id())
        if self.arena is not None:
            _node._cache.setdefault(_node.published_name(self.dataset), self.arena)

    def teardown(self, worker: Any) -> None:
        self.close()

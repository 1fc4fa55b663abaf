"""One arena per node under Ray: every task and actor on a node reads the same shared pages.

    import ray, shmarena.ray
    ray.init()
    lexicon = shmarena.ray.Dataset("lexicon", path="/data/lexicon.arena").start()
    # or: image=arena.save(...)'s bytes shipped through the object store once per node
    #     Dataset("lexicon", image=ray.put(open(p, "rb").read())).start()

    @ray.remote
    def task(word):
        return shmarena.ray.get("lexicon")["lexicon"].get(word)

``Dataset.start()`` places one holder actor on every alive node (node-affinity scheduling,
``num_cpus=0``, so it takes no task slot). Each holder loads the image (a path readable on the
node, or image bytes from the object store: Ray moves them to each node once, however many
workers the node runs), or calls ``build()``, and publishes the arena by name
(``shmarena.connect``). Tasks and actors connect with ``get(name)``, once per worker process.
``Dataset.stop()`` (or the driver's exit) kills the holders; processes already connected keep
reading. ``SHMARENA_HOST_ID`` namespaces names as in ``shmarena.dask``. See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import _node
from ._native import Arena

__all__ = ["Dataset", "get", "published_name"]


def published_name(name: str) -> str:
    """The name this process's node publishes ``name`` under (``NAME`` or ``NAME.HOST``)."""
    return _node.published_name(name)


def get(name: str, *, wait: float = _node.DEFAULT_WAIT) -> Arena:
    """The dataset ``name`` as published on this node, connected once per process and kept.

    Waits up to ``wait`` seconds (default 600) only while a process of the node holds the lock
    for the name (a holder loading or building it); raises ``NotPublishedError`` after about 2
    seconds if nothing publishes the name and nothing is loading it, and at once, with the
    cause, while a holder that failed to make it is alive."""
    return _node.cached_connect(_node.published_name(name), wait)


@ray.remote(num_cpus=0)
class _Holder:
    """Loads or builds a dataset on its node and publishes it for as long as it lives."""

    def __init__(self, name: str, path: str | None, build: Callable[[], Arena] | None, image: Any):
        def make() -> Arena:
            if image is not None:
                # A list wrapping the ObjectRef keeps Ray from resolving it as an argument
                # before we ask: the bytes are fetched here, into this node's object store.
                data = ray.get(image[0])
                return _node.load_bytes(data)
            return _node.load_or_build(path, build)

        self.published = _node.published_name(name)
        self.arena, self.publisher = _node.ensure_published(self.published, make)

    def info(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "arena": self.arena.id,
            "publishes": self.publisher is not None,
        }

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()


class Dataset:
    """A dataset published once per Ray node by a holder actor on each node.

    Give exactly one of ``path`` (an arena image file readable on every node), ``image`` (an
    ``ObjectRef`` of the image's bytes, e.g. ``ray.put(path.read_bytes())``) or ``build`` (a
    function returning an ``Arena``, called once per node).
    """

    def __init__(
        self,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        image: "ray.ObjectRef | None" = None,
        build: Callable[[], Arena] | None = None,
    ):
        if sum(x is not None for x in (path, image, build)) != 1:
            raise ValueError("give exactly one of path=, image= (an ObjectRef of image bytes) or build=")
        self.name = name
        self.path = os.fspath(path) if path is not None else None
        self.image = image
        self.build = build
        self.holders: dict[str, Any] = {}

    def start(self, timeout: float = 600.0) -> "Dataset":
        """Places a holder on every alive node without one and waits until each publishes."""
        pending = []
        for node in ray.nodes():
            node_id = node["NodeID"]
            if not node.get("Alive") or node_id in self.holders:
                continue
            holder = _Holder.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                name=f"shmarena-{self.name}-{node_id[:16]}",
                num_cpus=0,
            ).remote(self.name, self.path, self.build, None if self.image is None else [self.image])
            self.holders[node_id] = holder
            pending.append(holder.info.remote())
        ray.get(pending, timeout=timeout)
        return self

    def info(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """What each holder publishes: name, node, pid, arena id, and whether it publishes."""
        return ray.get([h.info.remote() for h in self.holders.values()], timeout=timeout)

    def stop(self) -> None:
        """Stops publishing on every node (processes already connected keep reading)."""
        for h in self.holders.values():
            try:
                ray.get(h.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a holder on a lost node is gone anyway
                pass
            ray.kill(h)
        self.holders.clear()

    def __enter__(self) -> "Dataset":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

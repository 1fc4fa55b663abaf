"""Datasets and a rank program for tests/test_torch.py: importable under every start method.

Run as a script (``python torch_workers.py OUT NAME CONTEXT``) it is one rank of a
``torchrun``-style launch: RANK, LOCAL_RANK and WORLD_SIZE come from the environment."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

import shmarena
import shmarena.torch


def records(n: int) -> list[dict]:
    return [
        {"path": f"img/{i:06d}.jpg", "label": i % 10, "box": [i * 0.5, 1.0, 2.0, 3.0], "tokens": [i, i + 1]}
        for i in range(n)
    ]


def features(n: int) -> np.ndarray:
    return np.arange(n * 16, dtype=np.float32).reshape(n, 16)


class Detection(torch.utils.data.Dataset):
    """A typical Dataset: a list of record dicts, a class map, a feature array, a method."""

    def __init__(self, n: int):
        self.records = records(n)
        self.classes = {f"class-{k}": k for k in range(1000)}
        self.features = features(n)
        self.scale = 2.0

    def __len__(self) -> int:
        return len(self.records)

    def label_of(self, r: dict) -> int:
        return self.classes[f"class-{r['label']}"]

    def __getitem__(self, i: int):
        r = self.records[i]
        r["label"] = self.label_of(r)  # changes its record, as real __getitem__s do
        return {
            "label": r["label"],
            "box": torch.tensor(r["box"]) * self.scale,
            "x": self.features[i],
            "n_tokens": len(r["tokens"]),
        }


class BatchOnly(shmarena.torch.Dataset):
    """Fails when DataLoader fetches one index at a time: proves it called __getitems__."""

    def __getitem__(self, i):
        raise AssertionError("DataLoader fetched a single index instead of calling __getitems__")


class KillOnce:
    """A transform of (features row, label) samples that SIGKILLs its worker the first time it
    sees sample 37 (a marker file says it happened)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, sample):
        if sample[0][0] == 37 * 16 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return sample


def strict_collate(batch):
    """default_collate with warnings turned into errors, in whichever process collates."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return default_collate(batch)


def arena_inodes() -> list[int]:
    """Inodes of the arena memfds this process maps (/proc/self/maps, `/memfd:shmarena`)."""
    out = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip().startswith("/memfd:shmarena (deleted)"):
                out.add(int(parts[4]))
    return sorted(out)


class Probe(torch.utils.data.Dataset):
    """Reads the shared dataset and reports which arena memfds its worker maps."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        sample = self.inner[i]
        return {"label": sample["label"], "pid": os.getpid(), "inodes": json.dumps(arena_inodes())}


def make_detection(build_log: str, n: int) -> Detection:
    with open(build_log, "a") as f:
        f.write(f"{os.environ.get('RANK')}\n")
    return Detection(n)


def rank_main(out: str, name: str, context: str, build_log: str, n: int) -> None:
    import functools

    rank = int(os.environ["RANK"])
    assert int(os.environ["WORLD_SIZE"]) == 2 and os.environ["LOCAL_RANK"] == str(rank)
    ds = shmarena.torch.share(functools.partial(make_detection, build_log, n), name=name)
    loader = DataLoader(Probe(ds), batch_size=16, num_workers=2, multiprocessing_context=context)
    labels, inodes, pids = 0, set(), set()
    for batch in loader:
        labels += int(batch["label"].sum())
        pids.update(int(p) for p in batch["pid"])
        for s in batch["inodes"]:
            inodes.update(json.loads(s))
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"labels": labels, "worker_inodes": sorted(inodes), "workers": len(pids),
                   "own_inodes": arena_inodes()}, f)
    # A barrier: the publishing rank serves the name until every rank has read its data.
    deadline = time.monotonic() + 120
    while not os.path.exists(f"{out}.{1 - rank}") and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    rank_main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))

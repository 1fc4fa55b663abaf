"""shmarena.torch with real torch (CPU) and real DataLoader workers: every start method, with
and without persistent workers, DataLoader's batched fetch, no "not writable" warning, a worker
killed mid-epoch, share() of an existing Dataset class, and a two-rank torchrun-style launch
(two processes started separately) that keeps one copy of the dataset for both."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import shmarena

torch = pytest.importorskip("torch", reason="torch is not installed (ci.sh installs it: pip install torch)")
from torch.utils.data import DataLoader  # noqa: E402

import shmarena.torch  # noqa: E402
import torch_workers as tw  # noqa: E402

pytestmark = pytest.mark.timeout(300)

CONTEXTS = ["fork", "forkserver", "spawn"]
N = 2000


def unique(tag: str) -> str:
    return f"sapy-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.fixture(autouse=True)
def nothing_new_in_dev_shm():
    """Neither shmarena nor torch's tensor passing leaves a file in /dev/shm."""
    before = set(os.listdir("/dev/shm"))
    yield
    new = {n for n in set(os.listdir("/dev/shm")) - before if n.startswith(("sapy-", "shmarena", "torch_"))}
    assert not new, f"left in /dev/shm: {sorted(new)}"


@pytest.fixture(scope="module")
def arena():
    with shmarena.build() as b:
        b.put("records", tw.records(N))
        b.put_array("features", tw.features(N))
        b.put_array("labels", np.arange(N, dtype=np.int64) % 10)
    yield b.arena
    b.arena.close()


def expected_sums():
    f = tw.features(N)
    return float(f.sum()), sum(i % 10 for i in range(N)), sum(i * 0.5 for i in range(N))


def epoch(loader):
    feats = labels = boxes = 0.0
    pids = set()
    for batch in loader:
        assert batch["x"].dtype == torch.float32 and batch["x"].shape[1:] == (16,)
        feats += float(batch["x"].sum())
        labels += int(batch["meta"]["label"].sum())
        boxes += float(batch["meta"]["box"][0].sum())
        pids.update(int(p) for p in batch["pid"])
    return (feats, labels, boxes), pids


def with_pid(sample):
    sample["pid"] = os.getpid()
    return sample


@pytest.mark.parametrize("context", CONTEXTS)
def test_dataset_every_start_method_batched_persistent(arena, context):
    ds = tw.BatchOnly(arena, {"meta": "records", "x": "features"}, transform=with_pid)
    assert len(pickle.dumps(ds)) < 1024  # handles, not data
    loader = DataLoader(
        ds,
        batch_size=64,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=True,
        collate_fn=tw.strict_collate,
    )
    first, pids1 = epoch(loader)
    second, pids2 = epoch(loader)
    assert first == second == expected_sums()
    assert len(pids1) == 2 and pids1 == pids2 and os.getpid() not in pids1  # the same two workers


@pytest.mark.parametrize("context", CONTEXTS)
def test_share_existing_dataset_every_start_method(context):
    original = tw.Detection(N)
    ds = shmarena.torch.share(original)
    assert isinstance(ds, tw.Detection) and type(ds) is not tw.Detection
    assert isinstance(ds.records, shmarena.torch.SharedList)
    assert isinstance(ds.classes, shmarena.torch.SharedDict)
    assert isinstance(ds.features, shmarena.SharedArray) and ds.scale == 2.0
    assert isinstance(original.records, list)  # the original is left as it was
    assert len(pickle.dumps(ds)) < 1024 < len(pickle.dumps(original))
    # What workers produce is what the original Dataset gives in this process.
    want = [original[i] for i in range(N)]
    loader = DataLoader(ds, batch_size=50, num_workers=2, multiprocessing_context=context, collate_fn=tw.strict_collate)
    got = [b for b in loader]
    assert sum(len(b["label"]) for b in got) == N
    labels = torch.cat([b["label"] for b in got])
    assert labels.tolist() == [w["label"] for w in want]
    x = torch.cat([b["x"] for b in got])
    assert torch.equal(x, torch.from_numpy(np.stack([w["x"] for w in want])))
    box = torch.cat([b["box"] for b in got])
    assert torch.equal(box, torch.stack([w["box"] for w in want]))


def test_share_samples_are_writable_and_records_plain():
    ds = shmarena.torch.share(tw.Detection(N))
    s = ds[3]
    assert s["x"].flags.writeable and not isinstance(s["x"], shmarena.SharedArray)
    assert type(ds.records[3]) is dict and type(ds.records[3]["box"]) is list
    assert ds.records[3]["label"] == 3  # __getitem__ changed a copy, not the arena
    view = shmarena.torch.share(tw.Detection(N), views=True)
    assert isinstance(view.records, shmarena.ListView) and isinstance(view.records[0], shmarena.MapView)


def test_writable_copies_only_read_only_arrays(arena):
    row = arena["features"][2]
    sample = {"x": row, "meta": [1, "a", (row, np.float32(2.0))], "ok": np.zeros(2)}
    out = shmarena.torch.writable(sample)
    assert out["x"].flags.writeable and type(out["x"]) is np.ndarray and out["x"].tolist() == row.tolist()
    assert out["meta"][2][0].flags.writeable and type(out["meta"][2]) is tuple
    assert type(out["meta"][2][1]) is np.float32  # scalars stay scalars
    assert out["ok"] is sample["ok"] and sample["x"] is row  # writable arrays kept; input unchanged
    plain = {"a": [1, 2.0, "s", None], "b": (np.ones(1),)}
    assert shmarena.torch.writable(plain) is plain


def test_not_writable_warning_is_caught_by_the_check(arena):
    """The check of the tests above can fail: rows of the arena array handed to collate as they
    are (read-only) make torch warn, which strict_collate turns into an error."""
    raw = arena["features"]
    with pytest.raises(UserWarning, match="not writable"):
        tw.strict_collate([raw[0], raw[1]])


def test_dataset_items_and_errors(arena):
    ds = shmarena.torch.Dataset(arena, ("records", "features", "labels"))
    rec, x, label = ds[5]
    assert rec == tw.records(N)[5] and type(rec) is dict
    assert x.flags.writeable and x.tolist() == list(range(80, 96)) and label == 5
    batch = ds.__getitems__([5, -1, 7])
    assert [s[2] for s in batch] == [5, (N - 1) % 10, 7]
    assert batch[0][1].flags.writeable and batch[0][1].base is batch[1][1].base  # one gathered block
    assert shmarena.torch.Dataset(arena, "labels")[9] == 9
    views = shmarena.torch.Dataset(arena, "records", views=True)
    assert isinstance(views[0], shmarena.MapView)
    with pytest.raises(KeyError, match="no entry 'nope'"):
        shmarena.torch.Dataset(arena, ["records", "nope"])
    with shmarena.build() as b:
        b.put("short", [1, 2])
        b.put_array("long", np.zeros(3))
        b.put("scalar", 4)
    with pytest.raises(ValueError, match="different lengths"):
        shmarena.torch.Dataset(b.arena, ["short", "long"])
    with pytest.raises(TypeError, match="'scalar' holds a int"):
        shmarena.torch.Dataset(b.arena, "scalar")
    with pytest.raises(IndexError):
        ds.__getitems__([N])
    b.arena.close()


def test_share_errors_name_the_attribute():
    class Odd:
        def __init__(self):
            self.paths = [object()] * 2000
            self.table = np.zeros(100_000)

        def __getitem__(self, i):
            return self.table[i]

    with pytest.warns(UserWarning, match=r"Odd\.paths stays a private attribute"):
        ds = shmarena.torch.share(Odd())
    assert isinstance(ds.table, shmarena.SharedArray) and isinstance(ds.paths, list)
    with pytest.raises(TypeError, match=r"Odd\.paths cannot be shared"):
        shmarena.torch.share(Odd(), attributes=["paths"])
    class Small:
        def __init__(self):
            self.items = list(range(10))

    with pytest.raises(ValueError, match="no attribute to share"):
        shmarena.torch.share(Small())


def test_killed_worker_then_next_epoch_reads_the_same_pages(arena, tmp_path):
    ds = shmarena.torch.Dataset(arena, ("features", "labels"), transform=tw.KillOnce(str(tmp_path / "killed")))
    idx = list(range(N))
    loader = DataLoader(ds, batch_size=32, num_workers=2, multiprocessing_context="spawn", sampler=idx)
    with pytest.raises(RuntimeError, match="exited unexpectedly|killed by signal"):
        for _ in loader:
            pass
    # A new epoch starts new workers, which attach again.
    total = sum(int(b[1].sum()) for b in loader)
    assert total == sum(i % 10 for i in range(N))


def test_two_ranks_share_one_copy(tmp_path):
    """Two processes started separately, as torchrun starts ranks: the first to arrive builds
    and publishes; the other connects; both ranks' workers map the same memfd."""
    name = f"ddp-{os.getpid()}-{time.monotonic_ns() % 10**5}"  # published as NAME.HOST: 30 bytes at most
    out, log = str(tmp_path / "rank"), str(tmp_path / "builds")
    script = os.path.join(os.path.dirname(__file__), "torch_workers.py")
    procs = []
    for rank, context in [(0, "fork"), (1, "spawn")]:
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   SHMARENA_HOST_ID="h")
        procs.append(subprocess.Popen([sys.executable, script, out, name, context, log, str(N)], env=env,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    ranks = []
    for r in (0, 1):
        with open(f"{out}.{r}") as f:
            ranks.append(json.load(f))
    with open(log) as f:
        assert len(f.read().split()) == 1  # one rank built the dataset
    want = sum(i % 10 for i in range(N))
    inode = ranks[0]["own_inodes"]
    assert len(inode) == 1 and ranks[1]["own_inodes"] == inode
    for r in ranks:
        assert r["labels"] == want and r["workers"] == 2
        assert r["worker_inodes"] == inode  # every worker of both ranks maps that one memfd
    with pytest.raises(shmarena.NotPublishedError):  # the publishing rank took its name along
        shmarena.connect(f"{name}.h")

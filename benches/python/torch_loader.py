"""A PyTorch DataLoader over a large map-style Dataset: one epoch, 4 workers, batch 256.

Dataset: N records shaped like real metadata (a path string, an int label, 4 float box
coordinates, a list of 8-24 token ids, 16 on average) plus a float32 feature array (N x 32).
Every variant's __getitem__ returns the same sample dict, and one collate function (tensors of
labels, boxes, the tokens flattened with their lengths, and default_collate of the feature rows)
makes every batch, so the variants differ only in where the data lives:

- plain:      the records as a Python list of dicts and the features as a numpy array,
              attributes of the Dataset (what most code does).
- serialized: the known workaround (detectron2's DatasetFromList(serialize=True)): each record
              pickled into one numpy uint8 buffer plus an offsets array; unpickled per access.
- shmarena:   the plain Dataset passed through shmarena.torch.share() (the one-line path: the
              list, the array and nothing else moved into one memfd arena; records come out as
              plain dicts, copied on access).
- shm-batch:  shmarena.torch.Dataset over the same two entries; DataLoader calls its
              __getitems__, which gathers a batch's feature rows into one writable array.

For each multiprocessing context {fork, forkserver, spawn} x variant, a fresh Python process
builds the data, makes the Dataset, and runs one shuffled epoch, reporting: each worker's
`Anonymous:` (/proc/PID/smaps_rollup) after its first batch and after the epoch, and the
growth between; the same for its private anonymous memory (`private_anon_kib`: a fork child's
inherited heap is in `Anonymous:` from the start and stays there when a write copies a page, so
only this shows the copies); the total Pss of the parent, the workers and the forkserver (if any) at the end
of the epoch (arena pages are counted once, split between their mappers); the time from creating
the DataLoader iterator to the first batch; batches per second from the first batch to the last.
Variants run interleaved (context by context, variant by variant, round by round).

    python benches/python/torch_loader.py --quick        # N = 100k
    python benches/python/torch_loader.py                # N = 1M
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import pickle
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

import shmarena
import shmarena.torch

DIM = 32
VARIANTS = ["plain", "serialized", "shmarena", "shm-batch"]
CONTEXTS = ["fork", "forkserver", "spawn"]


# ---------------------------------------------------------------- data


def make_data(n: int) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 1000, n).tolist()
    boxes = rng.random((n, 4)).tolist()
    lengths = rng.integers(8, 25, n)
    ends = np.cumsum(lengths).tolist()
    tokens = rng.integers(0, 30000, ends[-1]).tolist()
    records = []
    start = 0
    for i in range(n):
        end = ends[i]
        records.append(
            {"path": f"images/train/{i:08d}.jpg", "label": labels[i], "box": boxes[i], "tokens": tokens[start:end]}
        )
        start = end
    features = rng.random((n, DIM), dtype=np.float32)
    return records, features


class PlainDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[dict], features: np.ndarray):
        self.records = records
        self.features = features

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        return {"path": r["path"], "label": r["label"], "box": r["box"], "tokens": r["tokens"],
                "features": self.features[i]}


class SerializedDataset(torch.utils.data.Dataset):
    """detectron2's DatasetFromList(serialize=True): pickled records in one numpy byte buffer."""

    def __init__(self, records: list[dict], features: np.ndarray):
        bufs = [np.frombuffer(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for r in records]
        self.addr = np.cumsum(np.asarray([len(b) for b in bufs], dtype=np.int64))
        self.data = np.concatenate(bufs)
        self.features = features

    def __len__(self) -> int:
        return len(self.addr)

    def __getitem__(self, i: int) -> dict:
        start = 0 if i == 0 else int(self.addr[i - 1])
        r = pickle.loads(memoryview(self.data[start : int(self.addr[i])]))
        return {"path": r["path"], "label": r["label"], "box": r["box"], "tokens": r["tokens"],
                "features": self.features[i]}


def flatten(sample: dict) -> dict:
    """shm-batch's transform: {"r": record, "features": row} -> the same sample dict as the others."""
    r = sample["r"]
    return {"path": r["path"], "label": r["label"], "box": r["box"], "tokens": r["tokens"],
            "features": sample["features"]}


def collate(samples: list[dict]) -> dict:
    return {
        "path": [s["path"] for s in samples],
        "label": torch.tensor([s["label"] for s in samples]),
        "box": torch.tensor([s["box"] for s in samples], dtype=torch.float32),
        "tokens": torch.tensor([t for s in samples for t in s["tokens"]]),
        "lengths": torch.tensor([len(s["tokens"]) for s in samples]),
        "features": default_collate([s["features"] for s in samples]),
    }


def make_dataset(variant: str, records: list[dict], features: np.ndarray):
    if variant == "plain":
        return PlainDataset(records, features)
    if variant == "serialized":
        return SerializedDataset(records, features)
    if variant == "shmarena":
        return shmarena.torch.share(PlainDataset(records, features))
    if variant == "shm-batch":
        with shmarena.build() as b:
            b.put("records", records)
            b.put_array("features", features)
        return shmarena.torch.Dataset(b.arena, {"r": "records", "features": "features"}, transform=flatten)
    raise ValueError(variant)


# ---------------------------------------------------------------- one run (a fresh process)


def rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def private_anon_kib(pid: int) -> int:
    """Anonymous memory mapped by this process alone: over /proc/PID/smaps, each mapping's
    anonymous pages that are also private (min of `Anonymous:` and `Private_Clean:` +
    `Private_Dirty:`). A fork child's inherited heap counts in `Anonymous:` from the start and
    stays there when a write copies it (the copy is anonymous too); this counts the copies."""
    total = 0
    anon = priv = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                anon = int(line.split()[1])
            elif line.startswith("Private_Clean:"):
                priv = int(line.split()[1])
            elif line.startswith("Private_Dirty:"):
                priv += int(line.split()[1])
            elif line.startswith("VmFlags:"):  # the last field of each mapping
                total += min(anon, priv)
                anon = priv = 0
    return total


def forkserver_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def run_one(context: str, variant: str, n: int, workers: int, batch: int) -> dict:
    torch.set_num_threads(1)
    records, features = make_data(n)
    t = time.perf_counter()
    ds = make_dataset(variant, records, features)
    prep = time.perf_counter() - t
    del records, features  # what the Dataset keeps is what stays
    gc.collect()
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                        multiprocessing_context=context, generator=torch.Generator().manual_seed(1))
    nb = len(loader)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t1 = time.perf_counter()
    pids = [w.pid for w in it._workers]
    anon_first = [rollup(p)["Anonymous"] for p in pids]
    priv_first = [private_anon_kib(p) for p in pids]
    rows = len(first["label"])
    for _ in range(nb - 1):
        rows += len(next(it)["label"])
    t2 = time.perf_counter()
    # Every batch is in; the workers are alive until the iterator is asked for one more.
    ends = [rollup(p) for p in pids]
    priv_end = [private_anon_kib(p) for p in pids]
    procs = [os.getpid(), *pids]
    fs = forkserver_pid() if context == "forkserver" else None
    if fs:
        procs.append(fs)
    pss = sum(rollup(p)["Pss"] for p in procs)
    parent = rollup(os.getpid())
    for _ in it:
        raise AssertionError("more batches than len(loader)")
    assert rows == n, (rows, n)
    return {
        "context": context,
        "variant": variant,
        "n": n,
        "prep_s": prep,
        "first_batch_s": t1 - t0,
        "batches_per_s": (nb - 1) / (t2 - t1),
        "epoch_s": t2 - t0,
        "worker_anon_first_mib": [a / 1024 for a in anon_first],
        "worker_anon_end_mib": [e["Anonymous"] / 1024 for e in ends],
        "worker_growth_mib": [(e["Anonymous"] - a) / 1024 for e, a in zip(ends, anon_first)],
        "worker_private_first_mib": [a / 1024 for a in priv_first],
        "worker_private_growth_mib": [(e - a) / 1024 for e, a in zip(priv_end, priv_first)],
        "total_pss_mib": pss / 1024,
        "parent_anon_mib": parent["Anonymous"] / 1024,
        "load": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- the session


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 100k records")
    ap.add_argument("--n", type=int, help="records (default 1M, 100k with --quick)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians reported)")
    ap.add_argument("--contexts", default=",".join(CONTEXTS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", help="also write every run's figures to this file")
    ap.add_argument("--run", nargs=2, metavar=("CONTEXT", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    if args.run:
        print(json.dumps(run_one(args.run[0], args.run[1], n, args.workers, args.batch)), flush=True)
        return 0

    contexts = args.contexts.split(",")
    variants = args.variants.split(",")
    print(f"# N = {n:,} records, {args.workers} workers, batch {args.batch}, {args.rounds} round(s), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start", flush=True)
    results = []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for r in range(args.rounds):
        for context in contexts:
            for variant in variants:
                cmd = [sys.executable, os.path.abspath(__file__), "--run", context, variant, "--n", str(n),
                       "--workers", str(args.workers), "--batch", str(args.batch)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{context} {variant} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                    return 1
                res = json.loads(out.stdout.strip().splitlines()[-1])
                res["round"] = r
                results.append(res)
                print(f"  round {r} {context:10s} {variant:10s} first batch {res['first_batch_s']:6.2f} s  "
                      f"{res['batches_per_s']:6.1f} batches/s  worker growth "
                      f"{max(res['worker_growth_mib']):7.1f} MiB  private anon growth "
                      f"{max(res['worker_private_growth_mib']):7.1f} MiB  Pss {res['total_pss_mib']:7.0f} MiB  "
                      f"load {res['load']:.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print_table(results, contexts, variants)
    return 0


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(results: list[dict], contexts: list[str], variants: list[str]) -> None:
    def pick(c: str, v: str) -> list[dict]:
        return [r for r in results if r["context"] == c and r["variant"] == v]

    base = pick("fork", "plain")
    base_first = med([r["first_batch_s"] for r in base]) if base else None
    base_bps = med([r["batches_per_s"] for r in base]) if base else None
    print()
    print("| context | variant | worker `Anonymous:` after 1st batch → end (MiB, max of workers) | growth (MiB, max) "
          "| private anon after 1st batch (MiB) | private anon growth (MiB) | total Pss (MiB) | prep (s) | iterator → 1st batch (s) | vs plain fork | batches/s | vs plain fork "
          "| vs serialized, same context |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in contexts:
        ser = pick(c, "serialized")
        ser_bps = med([r["batches_per_s"] for r in ser]) if ser else None
        for v in variants:
            rs = pick(c, v)
            if not rs:
                continue
            first = med([r["first_batch_s"] for r in rs])
            bps = med([r["batches_per_s"] for r in rs])
            a0 = med([max(r["worker_anon_first_mib"]) for r in rs])
            a1 = med([max(r["worker_anon_end_mib"]) for r in rs])
            g = med([max(r["worker_growth_mib"]) for r in rs])
            pss = med([r["total_pss_mib"] for r in rs])
            p0 = med([max(r["worker_private_first_mib"]) for r in rs])
            pg = med([max(r["worker_private_growth_mib"]) for r in rs])
            prep = med([r["prep_s"] for r in rs])
            rf = f"{first / base_first:.2f}×" if base_first else "–"
            rb = f"{bps / base_bps:.2f}×" if base_bps else "–"
            rs_ = f"{bps / ser_bps:.2f}×" if ser_bps and v != "serialized" else "–"
            print(f"| {c} | {v} | {a0:.1f} → {a1:.1f} | {g:.1f} | {p0:.1f} | {pg:.1f} | {pss:.0f} | {prep:.1f} | {first:.2f} | {rf} "
                  f"| {bps:.1f} | {rb} | {rs_} |")


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())

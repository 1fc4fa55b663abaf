"""Conformance run: the spec-only reader (`reader.py`) against `arena-inspect verify`.

    python3 conformance/run.py DIR [--inspect PATH] [--xxh3 DIR/xxh3.json]

For every `*.arena` in DIR (sound fixtures written by Rust or Python), derives damaged variants
(truncations, bit flips in header, table and payloads, edited fields with the checksums fixed
so that the structural checks must catch them, bad magic, other versions, still building),
then checks that the reader and `arena-inspect verify --json` give the same verdict class on
each: ok (exit 0), the same problem (exit 1: not-an-arena, truncated, corrupted, checksum,
still-building) or incompatible (exit 2). Exits 1 on any disagreement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reader  # noqa: E402
from xxh3 import xxh3_64  # noqa: E402


def verdict(data: bytes) -> str:
    """The reader's verdict in `arena-inspect verify --json`'s words."""
    try:
        layout = reader.parse(data)
    except reader.FormatError as e:
        return e.cls
    for e in layout.entries:
        if xxh3_64(data[e.offset : e.offset + e.len]) != e.checksum:
            return "checksum"
    return "ok"


def inspect_verdict(inspect: str, path: str) -> str:
    p = subprocess.run([inspect, "verify", "--json", path], capture_output=True, text=True)
    if p.returncode == 0:
        return "ok"
    if p.returncode == 2:
        return "incompatible" if "cannot read" in p.stderr or "incompatible" in p.stderr else f"error: {p.stderr.strip()}"
    return json.loads(p.stdout)["problem"]


def _reseal_header(b: bytearray) -> None:
    b[120:128] = struct.pack("<Q", xxh3_64(bytes(b[:120])))


def _reseal_toc(b: bytearray) -> None:
    toc_off, toc_len = struct.unpack_from("<QQ", b, 72)
    b[96:104] = struct.pack("<Q", xxh3_64(bytes(b[toc_off : toc_off + toc_len])))
    _reseal_header(b)


# (offset, width) of the table-entry fields, reserved bytes included.
ENTRY_FIELDS = [(0, 4), (4, 4), (8, 1), (9, 1), (10, 1), (11, 1), (12, 4), (16, 8), (24, 8),
                (32, 8), (40, 8), (48, 8), (56, 8), (64, 4), (68, 4), (72, 8), (80, 4), (84, 4),
                (88, 8)]
HEADER_FIELDS = [(8, 4), (12, 1), (13, 1), (14, 1), (15, 1), (16, 4), (20, 4), (24, 8),
                 (48, 4), (52, 4), (72, 8), (80, 8), (88, 4), (92, 4), (104, 8)]


def _edits(old: int, width: int, rng: random.Random) -> list[int]:
    top = (1 << (8 * width)) - 1
    vals = {0, 1, 2, 3, 8, 16, 64, 128, top, top >> 1, old + 1, old - 1, old + 8, old ^ 0x80,
            rng.randrange(top + 1)}
    return sorted(v for v in vals if 0 <= v <= top and v != old)


def variants(data: bytes, seed: int = 0):
    """(label, bytes) of damaged versions of a sound arena."""
    rng = random.Random(seed)
    n = len(data)
    toc_off, toc_len = struct.unpack_from("<QQ", data, 72)
    count = struct.unpack_from("<I", data, 88)[0]
    yield "sound", data
    yield "trailing bytes", data + b"\0" * 64
    yield "empty file", b""
    yield "bad magic", b"SHMARENB" + data[8:]
    for cut in sorted(set(range(0, 137)) | set(range(137, n, 13)) | {n - 1, toc_off, toc_off + 1}):
        yield f"truncated to {cut}", data[:cut]
    for at in range(n):
        if at < 128 or at >= toc_off or at % 5 == 0:
            b = bytearray(data)
            b[at] ^= 1 << ((at * 3) % 8)
            yield f"bit flip at {at}", bytes(b)
    for off, width in HEADER_FIELDS:
        old = int.from_bytes(data[off : off + width], "little")
        for v in _edits(old, width, rng):
            b = bytearray(data)
            b[off : off + width] = v.to_bytes(width, "little")
            _reseal_header(b)
            yield f"header field {off} = {v}", bytes(b)
    for i in range(count):
        base = toc_off + 96 * i
        for off, width in ENTRY_FIELDS:
            old = int.from_bytes(data[base + off : base + off + width], "little")
            for v in _edits(old, width, rng)[:: 1 if count < 8 else 2]:
                b = bytearray(data)
                b[base + off : base + off + width] = v.to_bytes(width, "little")
                _reseal_toc(b)
                yield f"entry {i} field {off} = {v}", bytes(b)
    names = toc_off + 96 * count
    for at in range(names, toc_off + toc_len):
        for v in (0x00, 0xC3, 0xFF):
            b = bytearray(data)
            if b[at] == v:
                continue
            b[at] = v
            _reseal_toc(b)
            yield f"names byte {at} = {v:#x}", bytes(b)


def run(paths: list[Path], inspect: str, workers: int = 4) -> tuple[int, list[str]]:
    """Checks every variant of every arena; (variants checked, disagreements)."""
    tmp = Path(tempfile.mkdtemp(prefix="shmarena-conformance-"))
    jobs = []
    try:
        for p in paths:
            data = p.read_bytes()
            for k, (label, b) in enumerate(variants(data, seed=len(data))):
                f = tmp / f"{p.stem}-{k}.arena"
                f.write_bytes(b)
                jobs.append((f"{p.name}: {label}", str(f), verdict(b)))
        with ThreadPoolExecutor(workers) as pool:
            theirs = list(pool.map(lambda j: inspect_verdict(inspect, j[1]), jobs))
    finally:
        shutil.rmtree(tmp)
    bad = [f"{label}: reader says {ours}, arena-inspect says {t}"
           for (label, _, ours), t in zip(jobs, theirs) if ours != t]
    return len(jobs), bad


def check_xxh3(vectors: Path) -> None:
    for n, want in json.loads(vectors.read_text()):
        data = bytes((i * 31 + 7) % 251 for i in range(n))
        got = xxh3_64(data)
        if got != int(want, 16):
            raise SystemExit(f"xxh3-64 of {n} bytes: {got:016x}, xxhash-rust says {want}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--inspect", default=os.environ.get("ARENA_INSPECT", "arena-inspect"))
    args = ap.parse_args()
    t = time.monotonic()
    if (args.dir / "xxh3.json").exists():
        check_xxh3(args.dir / "xxh3.json")
        print("xxh3-64 agrees with xxhash-rust on every test vector")
    paths = sorted(args.dir.glob("*.arena"))
    if not paths:
        raise SystemExit(f"no *.arena in {args.dir}")
    if (args.dir / "expect.json").exists():
        for name, entries in json.loads((args.dir / "expect.json").read_text()).items():
            data = (args.dir / name).read_bytes()
            layout = reader.verify(data)
            assert layout.header.version == entries.pop("version"), name
            for entry, want in entries.items():
                e = layout.find(entry)
                got = [reader.dtype(e), list(e.dims), reader.elements(data, e)]
                if got != [want["dtype"], want["shape"], want["values"]]:
                    raise SystemExit(f"{name} {entry}: reader gives {got}, expected {want}")
        print("the reader reads every fixture entry's dtype, shape and values as expected")
    n, bad = run(paths, args.inspect)
    for line in bad[:50]:
        print("DISAGREE:", line)
    print(f"{n} arenas ({len(paths)} sound fixtures and their damaged variants): "
          f"{n - len(bad)} agree, {len(bad)} disagree, in {time.monotonic() - t:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

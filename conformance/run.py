"""Conformance run: the spec-only reader (`reader.py`) against `arena-inspect verify` and, when
`shmarena` is importable, the Python bindings.

    python3 conformance/run.py DIR [--inspect PATH] [--pointer-width 4|8]

For every `*.arena` in DIR (sound fixtures written by Rust or Python), derives damaged variants
(truncations, bit flips in header, table and payloads, edited fields with the checksums fixed
so that the structural checks must catch them, bad magic, other versions, still building, and
edited bytes and words inside archived values with every checksum fixed, so that only the
value's own rules can catch them), then checks on each:

- the format verdict: the reader and `arena-inspect verify --json` give the same class: ok
  (exit 0), the same problem (exit 1: not-an-arena, truncated, corrupted, checksum,
  still-building) or incompatible (exit 2); the bindings' `shmarena.open` and `Arena.verify`
  raise the `shmarena.FormatError` subclass of that class (`CorruptedError` for a checksum);
- the read verdict, when the format is sound: reading every entry in full gives, entry by
  entry, the same class in the reader and the bindings (ok, corrupted, type-mismatch), and
  the same contents where both read it. Any other exception from the bindings is a failure.

Exits 1 on any disagreement.
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


sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))


def verdict(data: bytes, pointer_width: int = 4) -> str:
    """The reader's format verdict in `arena-inspect verify --json`'s words."""
    try:
        layout = reader.parse(data, pointer_width)
    except reader.FormatError as e:
        return e.cls
    for e in layout.entries:
        if xxh3_64(data[e.offset : e.offset + e.len]) != e.checksum:
            return "checksum"
    return "ok"


def _norm(x):
    """A comparable form of what a reader gives: arrays as (dtype, shape, bytes), floats by
    their bits (NaN equals NaN)."""
    if isinstance(x, reader.ArrayValue):
        return ("array", x.dtype, tuple(x.shape), x.data)
    if type(x).__name__ == "SharedArray" or type(x).__name__ == "ndarray":
        return ("array", x.dtype.str, tuple(x.shape), x.tobytes())
    if isinstance(x, float):
        return ("float", struct.pack("<d", x))
    if isinstance(x, dict):
        return ("dict", tuple((_norm(k), _norm(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_norm(v) for v in x))
    return x


def read_verdict(data: bytes, pointer_width: int = 4) -> list:
    """The reader's read verdict of a sound-format arena: per entry (table order, the side
    table left out), its class and, when it reads, its contents."""
    layout = reader.parse(data, pointer_width)
    out = []
    for e in layout.entries:
        if e.name == reader.SIDE_TABLE:
            continue
        try:
            if e.kind == "archived":
                got = reader.value(data, layout, e.name)
            else:
                dt, shape, raw = reader.array(data, e, layout)
                got = reader.ArrayValue(dt, tuple(shape), bytes(raw))
            out.append((e.name, "ok", _norm(got)))
        except reader.TypeMismatch:
            out.append((e.name, "type-mismatch", None))
        except reader.FormatError as err:
            out.append((e.name, err.cls, None))
    return out


def bindings_verdicts(path: str):
    """The Python bindings' (format verdict, read verdict) of the arena at `path`."""
    import shmarena

    classes = [
        (shmarena.NotAnArenaError, "not-an-arena"),
        (shmarena.IncompatibleError, "incompatible"),
        (shmarena.TruncatedError, "truncated"),
        (shmarena.CorruptedError, "corrupted"),
        (shmarena.StillBuildingError, "still-building"),
        (shmarena.TypeMismatchError, "type-mismatch"),
    ]

    def cls(err: BaseException) -> str:
        for t, name in classes:
            if isinstance(err, t):
                return name
        return f"{type(err).__name__}: {err}"  # not a shmarena class: always a disagreement

    try:
        arena = shmarena.open(path=path)
    except Exception as err:  # noqa: BLE001 - the class is the verdict
        return cls(err), None
    try:
        out = []
        for name in arena:
            try:
                x = arena[name]
                if isinstance(x, (shmarena.MapView, shmarena.ListView)):
                    x = x.to_python()
                out.append((name, "ok", _norm(x)))
            except Exception as err:  # noqa: BLE001
                out.append((name, cls(err), None))
        return "ok", out
    finally:
        arena.close()


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


def _reseal_payload(b: bytearray, index: int, offset: int, length: int) -> None:
    toc_off = struct.unpack_from("<Q", b, 72)[0]
    at = toc_off + 96 * index + 72
    b[at : at + 8] = struct.pack("<Q", xxh3_64(bytes(b[offset : offset + length])))
    _reseal_toc(b)


def value_variants(data: bytes, pointer_width: int = 4):
    """(label, bytes) of archived values damaged inside, every checksum fixed: each byte set
    to 0x00, 0x80 and 0xff and flipped in its low bit, and each pointer-sized word moved by
    -1, +1, -w, +w, +16 and negated. Only the value's own rules (VALUES.md) can refuse them."""
    layout = reader.parse(data, pointer_width)
    w = pointer_width
    for e in layout.entries:
        if e.kind != "archived" or not reader.is_value(e, w):
            continue
        for at in range(e.offset, e.offset + e.len):
            old = data[at]
            for v in sorted({0x00, 0x80, 0xFF, old ^ 1} - {old}):
                b = bytearray(data)
                b[at] = v
                _reseal_payload(b, e.index, e.offset, e.len)
                yield f"entry {e.name!r} value byte {at - e.offset} = {v:#x}", bytes(b)
        for at in range(e.offset, e.offset + e.len - w + 1, w):
            old = int.from_bytes(data[at : at + w], "little", signed=True)
            for delta in (-1, 1, -w, w, 16):
                new = old + delta
                if -(1 << (8 * w - 1)) <= new < 1 << (8 * w - 1):
                    b = bytearray(data)
                    b[at : at + w] = new.to_bytes(w, "little", signed=True)
                    _reseal_payload(b, e.index, e.offset, e.len)
                    yield f"entry {e.name!r} value word {at - e.offset} {delta:+d}", bytes(b)
            if old not in (0, -(1 << (8 * w - 1))):
                b = bytearray(data)
                b[at : at + w] = (-old).to_bytes(w, "little", signed=True)
                _reseal_payload(b, e.index, e.offset, e.len)
                yield f"entry {e.name!r} value word {at - e.offset} negated", bytes(b)


def _bindings_available() -> bool:
    try:
        import shmarena  # noqa: F401
    except ImportError:
        return False
    return True


def run(paths: list[Path], inspect: str | None, workers: int = 4, pointer_width: int = 4,
        bindings: bool | None = None) -> tuple[int, list[str]]:
    """Checks every variant of every arena; (variants checked, disagreements). `arena-inspect`
    judges unless `inspect` is None; the bindings judge too when `bindings` (default: when
    `shmarena` imports and `pointer_width` is 4)."""
    if bindings is None:
        bindings = pointer_width == 4 and _bindings_available()
    tmp = Path(tempfile.mkdtemp(prefix="shmarena-conformance-"))
    jobs = []
    bad = []
    try:
        for p in paths:
            data = p.read_bytes()
            all_variants = list(variants(data, seed=len(data)))
            all_variants += value_variants(data, pointer_width)
            for k, (label, b) in enumerate(all_variants):
                f = tmp / f"{p.stem}-{k}.arena"
                f.write_bytes(b)
                ours = verdict(b, pointer_width)
                read = read_verdict(b, pointer_width) if ours == "ok" else None
                jobs.append((f"{p.name}: {label}", str(f), ours, read))
        if inspect is None:  # judged by arena-inspect elsewhere
            theirs = [ours for _, _, ours, _ in jobs]
        else:
            with ThreadPoolExecutor(workers) as pool:
                theirs = list(pool.map(lambda j: inspect_verdict(inspect, j[1]), jobs))
        for (label, path, ours, read), t in zip(jobs, theirs):
            if ours != t:
                bad.append(f"{label}: reader says {ours}, arena-inspect says {t}")
            if not bindings:
                continue
            fmt, their_read = bindings_verdicts(path)
            want = "corrupted" if ours == "checksum" else ours
            if fmt != want:
                bad.append(f"{label}: reader says {ours}, the bindings say {fmt}")
            elif read is not None and read != their_read:
                diff = [(a, b) for a, b in zip(read, their_read or []) if a != b][:1]
                bad.append(f"{label}: reader reads {diff[0][0][:2] if diff else read}, "
                           f"the bindings {diff[0][1][:2] if diff else their_read}")
    finally:
        shutil.rmtree(tmp)
    STATS.clear()
    for _, _, ours, read in jobs:
        STATS[ours] = STATS.get(ours, 0) + 1
        for _, cls, _ in read or []:
            if cls != "ok":
                STATS[f"read {cls}"] = STATS.get(f"read {cls}", 0) + 1
    return len(jobs), bad


# The last run's verdicts by class: format classes, and "read corrupted"/"read type-mismatch"
# counting entries of format-sound variants that a full read refuses.
STATS: dict[str, int] = {}


def _json(x):
    """A decoded value as JSON would hold it (tuples as lists, arrays as dicts)."""
    if isinstance(x, reader.ArrayValue):
        return {"dtype": x.dtype, "shape": list(x.shape), "data": list(x.data)}
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, bytes):
        return list(x)
    return x


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
    ap.add_argument("--pointer-width", type=int, choices=(4, 8), default=4,
                    help="the pointer width the reader (and arena-inspect) read: 4, or 8 for "
                    "arenas and an arena-inspect built with `pointer_width_64`")
    ap.add_argument("--arenas", default="*.arena",
                    help="which sound fixtures of DIR to damage (a glob; default all)")
    args = ap.parse_args()
    t = time.monotonic()
    if (args.dir / "xxh3.json").exists():
        check_xxh3(args.dir / "xxh3.json")
        print("xxh3-64 agrees with xxhash-rust on every test vector")
    paths = sorted(args.dir.glob(args.arenas))
    if not paths:
        raise SystemExit(f"no {args.arenas} in {args.dir}")
    if (args.dir / "expect.json").exists():
        for name, entries in json.loads((args.dir / "expect.json").read_text()).items():
            data = (args.dir / name).read_bytes()
            layout = reader.verify(data, args.pointer_width)
            assert layout.header.version == entries.pop("version"), name
            for entry, want in entries.items():
                e = layout.find(entry)
                if "value" in want:  # an archived entry in the value model's layout
                    got = _json(reader.value_at(data, e, args.pointer_width))
                    if got != want["value"]:
                        raise SystemExit(f"{name} {entry}: reader gives {got}, expected {want}")
                    continue
                got = [reader.dtype(e), list(e.dims), reader.elements(data, e)]
                if got != [want["dtype"], want["shape"], want["values"]]:
                    raise SystemExit(f"{name} {entry}: reader gives {got}, expected {want}")
        print("the reader reads every fixture entry's dtype, shape and values as expected")
    for p in paths:  # FORMAT.md's printed fingerprint: KIND:TYPE_HASH:ELEM_SIZE:ALIGN
        out = subprocess.run([args.inspect, "--json", "info", str(p)], capture_output=True,
                             text=True, check=True).stdout
        theirs = [e["fingerprint"] for e in json.loads(out)["entries"]]
        ours = [e.fingerprint for e in reader.parse(p.read_bytes(), args.pointer_width).entries]
        if theirs != ours:
            raise SystemExit(f"{p.name}: arena-inspect prints fingerprints {theirs}, the reader {ours}")
    print("arena-inspect prints every fixture entry's fingerprint as FORMAT.md says")
    bindings = args.pointer_width == 4 and _bindings_available()
    n, bad = run(paths, args.inspect, pointer_width=args.pointer_width, bindings=bindings)
    for line in bad[:50]:
        print("DISAGREE:", line)
    judges = "reader, arena-inspect and the bindings" if bindings else "reader and arena-inspect"
    print(f"{n} arenas ({len(paths)} sound fixtures and their damaged variants, pointer width "
          f"{args.pointer_width}): {judges} agree on {n - len(bad)}, disagree on {len(bad)}, "
          f"in {time.monotonic() - t:.1f}s")
    print("verdicts:", ", ".join(f"{v} {k}" for k, v in sorted(STATS.items(), key=lambda kv: -kv[1])))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

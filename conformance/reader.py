"""A reader of shmarena arenas written only from docs/FORMAT.md and docs/VALUES.md.

Plain Python, no compiled extension, no shmarena code: it exists to show that the documents are
enough, and CI checks that it agrees with the Rust reader (`arena-inspect verify`) on every
fixture arena, sound or damaged (`run.py`, `crates/shmarena-py/tests/test_conformance.py`).

    layout = parse(data)          # header + table of contents, FORMAT.md's checks in order
    verify(data)                  # + every payload checksum
    dtype, shape, raw = array(data, layout.entries[i])
    value(data, layout, "name")   # an archived Python value (VALUES.md, model 1) as Python objects

Every refusal is a `FormatError` whose `cls` is one of the five classes of FORMAT.md:
"not-an-arena", "incompatible", "truncated", "corrupted", "still-building".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

try:
    from .xxh3 import xxh3_64
except ImportError:  # run as a plain script from this directory
    from xxh3 import xxh3_64  # type: ignore[no-redef]

MAGIC = b"SHMARENA"
HEADER_LEN = 128
ENTRY_LEN = 96
VERSIONS = (1, 2)
MAX_NAME = 255
MAX_ALIGN = 4096
MAX_NDIM = 64
FLAG_VALIDATED = 1
FLAG_SHAPED = 2

# prim code -> (name, element size or None for the strings, numpy dtype template)
PRIMS = {
    0: ("opaque", None, "|V{n}"),
    1: ("u8", 1, "|u1"),
    2: ("u16", 2, "<u2"),
    3: ("u32", 4, "<u4"),
    4: ("u64", 8, "<u8"),
    5: ("i8", 1, "|i1"),
    6: ("i16", 2, "<i2"),
    7: ("i32", 4, "<i4"),
    8: ("i64", 8, "<i8"),
    9: ("f32", 4, "<f4"),
    10: ("f64", 8, "<f8"),
    11: ("bool", 1, "|b1"),
    12: ("f16", 2, "<f2"),
    13: ("c64", 8, "<c8"),
    14: ("c128", 16, "<c16"),
    15: ("datetime64", 8, "<M8{unit}"),
    16: ("timedelta64", 8, "<m8{unit}"),
    17: ("bytes-string", None, "|S{n}"),
    18: ("unicode-string", None, "<U{u}"),
}
V1_PRIMS = 11
TIME_UNITS = ["", "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]
KINDS = {1: "archived", 2: "pod", 3: "bytes"}


class FormatError(Exception):
    """Why bytes are not a readable arena; `cls` is the class FORMAT.md gives the check."""

    def __init__(self, cls: str, detail: str):
        super().__init__(f"{cls}: {detail}")
        self.cls = cls
        self.detail = detail


def _u32(b, at):
    return struct.unpack_from("<I", b, at)[0]


def _u64(b, at):
    return struct.unpack_from("<Q", b, at)[0]


@dataclass
class Header:
    version: int
    endian: int
    pointer_width: int
    rkyv: tuple[int, int]
    state: int
    total_len: int
    arena_id: bytes
    creator_pid: int
    creator_start: int
    created_ns: int
    toc_offset: int
    toc_len: int
    entry_count: int
    toc_checksum: int


@dataclass
class Entry:
    index: int
    name: str
    kind: str
    prim: int
    flags: int
    align: int
    offset: int
    len: int
    root_pos: int
    count: int
    elem_size: int
    type_hash: int
    type_name: str
    checksum: int
    prim_arg: int = 0
    shape: tuple[int, ...] | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        return self.shape if self.shape is not None else (self.count,)

    @property
    def fingerprint(self) -> str:
        return f"{self.kind}:{self.type_hash:016x}:{self.elem_size}:{self.align}"


@dataclass
class Layout:
    header: Header
    entries: list[Entry] = field(default_factory=list)

    def find(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)


def parse_header(data, pointer_width: int = 4) -> Header:
    """FORMAT.md checks H1-H10 ("Reading a header"), in order."""
    n = len(data)
    if n < 8 or bytes(data[:8]) != MAGIC:
        raise FormatError("not-an-arena", "no SHMARENA magic")
    if n < HEADER_LEN:
        raise FormatError("truncated", f"{n} bytes, shorter than the header")
    h = bytes(data[:HEADER_LEN])
    version = _u32(h, 8)
    if version not in VERSIONS:
        raise FormatError("incompatible", f"format version {version}")
    if xxh3_64(h[:120]) != _u64(h, 120):
        raise FormatError("corrupted", "header checksum")
    if _u32(h, 16) != HEADER_LEN:
        raise FormatError("corrupted", "header length")
    endian, width, major, minor = h[12], h[13], h[14], h[15]
    if endian != 1:
        raise FormatError("incompatible", f"byte order {endian} (this reader is little-endian)")
    if (major, minor) != (0, 8):
        raise FormatError("incompatible", f"rkyv generation {major}.{minor}")
    if width != pointer_width:
        raise FormatError("incompatible", f"pointer width {width}")
    state = _u32(h, 20)
    if state not in (1, 2):
        raise FormatError("corrupted", f"state {state}")
    return Header(
        version=version,
        endian=endian,
        pointer_width=width,
        rkyv=(major, minor),
        state=state,
        total_len=_u64(h, 24),
        arena_id=h[32:48],
        creator_pid=_u32(h, 48),
        creator_start=_u64(h, 56),
        created_ns=_u64(h, 64),
        toc_offset=_u64(h, 72),
        toc_len=_u64(h, 80),
        entry_count=_u32(h, 88),
        toc_checksum=_u64(h, 96),
    )


def parse(data, pointer_width: int = 4) -> Layout:
    """Header and table of contents, with every check of FORMAT.md in its order. O(entries)."""
    h = parse_header(data, pointer_width)
    if h.state != 2:
        raise FormatError("still-building", "not sealed")
    total = h.total_len
    if total < HEADER_LEN:
        raise FormatError("corrupted", "total_len below 128")
    if total > len(data):
        raise FormatError("truncated", f"needs {total} bytes, has {len(data)}")
    toc_off, toc_len = h.toc_offset, h.toc_len
    toc_end = toc_off + toc_len
    if toc_end >= 1 << 64:
        raise FormatError("corrupted", "toc_offset + toc_len overflows")
    if toc_off < HEADER_LEN or toc_off % 8 or toc_end != total:
        raise FormatError("corrupted", "table of contents does not end the arena")
    fixed_len = h.entry_count * ENTRY_LEN
    if fixed_len > toc_len:
        raise FormatError("corrupted", "entries do not fit the table of contents")
    toc = bytes(data[toc_off:toc_end])
    if xxh3_64(toc) != h.toc_checksum:
        raise FormatError("corrupted", "table of contents checksum")
    names = toc[fixed_len:]
    layout = Layout(h)
    for i in range(h.entry_count):
        layout.entries.append(_entry(i, toc[i * ENTRY_LEN : (i + 1) * ENTRY_LEN], names, h))
    spans = sorted((e.offset, e.offset + e.len) for e in layout.entries if e.len > 0)
    for (_, end_a), (start_b, _) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise FormatError("corrupted", "payloads overlap")
    seen = set()
    for e in layout.entries:
        if e.name in seen:
            raise FormatError("corrupted", f"name {e.name!r} twice")
        seen.add(e.name)
    return layout


def _str(names, off, length, what):
    if off + length > len(names):
        raise FormatError("corrupted", f"{what} outside the names area")
    try:
        return names[off : off + length].decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("corrupted", f"{what} is not UTF-8") from e


def _entry(i, b, names, h: Header) -> Entry:
    """FORMAT.md checks E1-E16 of one table entry, in order."""
    bad = lambda why: FormatError("corrupted", f"entry #{i}: {why}")  # noqa: E731
    name = _str(names, _u32(b, 0), _u32(b, 4), "name")
    if not 1 <= len(name.encode()) <= MAX_NAME:
        raise bad("name length")
    if b[8] not in KINDS:
        raise bad(f"kind {b[8]}")
    kind = KINDS[b[8]]
    prim = b[9]
    if prim >= (V1_PRIMS if h.version < 2 else len(PRIMS)):
        raise bad(f"primitive {prim}")
    type_name = _str(names, _u32(b, 64), _u32(b, 68), "type name")
    v2 = h.version >= 2
    flags = b[10] if v2 else b[10] & FLAG_VALIDATED
    e = Entry(
        index=i,
        name=name,
        kind=kind,
        prim=prim,
        flags=flags,
        align=_u32(b, 12),
        offset=_u64(b, 16),
        len=_u64(b, 24),
        root_pos=_u64(b, 32),
        count=_u64(b, 40),
        elem_size=_u64(b, 48),
        type_hash=_u64(b, 56),
        type_name=type_name,
        checksum=_u64(b, 72),
        prim_arg=b[11] if v2 else 0,
    )
    if e.align == 0 or e.align & (e.align - 1) or e.align > MAX_ALIGN:
        raise bad("align")
    end = e.offset + e.len
    if end >= 1 << 64:
        raise bad("offset + len overflows")
    if e.offset < HEADER_LEN or end > h.toc_offset:
        raise bad("payload outside the payload area")
    if e.offset % max(e.align, 16 if kind == "archived" else 1):
        raise bad("offset not aligned")
    if kind == "archived":
        if e.count != 1:
            raise bad("archived count")
        root_end = e.root_pos + e.elem_size
        if root_end >= 1 << 64:
            raise bad("root overflows")
        if root_end > e.len or (e.offset + e.root_pos) % e.align:
            raise bad("root does not fit")
    else:
        if e.root_pos != 0:
            raise bad("root_pos of a pod/bytes entry")
        if e.count * e.elem_size >= 1 << 64 or e.count * e.elem_size != e.len:
            raise bad("count x elem_size != len")
        if e.elem_size and e.elem_size % e.align:
            raise bad("elem_size not a multiple of align")
        if kind == "bytes" and (e.elem_size != 1 or prim != 1):
            raise bad("bytes entry not 1-byte u8")
        size = PRIMS[prim][1]
        if prim == 17:
            ok = e.elem_size >= 1
        elif prim == 18:
            ok = e.elem_size >= 4 and e.elem_size % 4 == 0
        else:
            ok = prim == 0 or size == e.elem_size
        if not ok:
            raise bad("element size does not fit the primitive")
    if v2:
        timed = prim in (15, 16)
        if (timed and e.prim_arg >= len(TIME_UNITS)) or (not timed and e.prim_arg != 0):
            raise bad("primitive parameter")
        if flags & FLAG_SHAPED:
            if kind != "pod":
                raise bad("shape on a non-pod entry")
            ndim = _u32(b, 84)
            if ndim > MAX_NDIM:
                raise bad("ndim")
            off = _u32(b, 80)
            if off + 8 * ndim > len(names):
                raise bad("shape outside the names area")
            shape = struct.unpack_from(f"<{ndim}Q", names, off)
            product = 1
            for d in shape:
                product *= d
                if product >= 1 << 64:
                    raise bad("shape overflows")
            if product != e.count:
                raise bad("shape does not hold count elements")
            e.shape = tuple(shape)
    return e


def verify(data, pointer_width: int = 4) -> Layout:
    """`parse` and then every payload checksum, in table order (FORMAT.md check V1)."""
    layout = parse(data, pointer_width)
    for e in layout.entries:
        if xxh3_64(data[e.offset : e.offset + e.len]) != e.checksum:
            raise FormatError("corrupted", f"entry {e.name!r}: payload checksum")
    return layout


def dtype(e: Entry) -> str:
    """The numpy dtype string (`numpy.dtype(s)` accepts it) of a pod or bytes entry."""
    if e.prim == 0 and e.type_name.startswith("numpy:"):
        return e.type_name[len("numpy:") :]  # the Python bindings' opaque numpy dtypes
    template = PRIMS[e.prim][2]
    unit = TIME_UNITS[e.prim_arg] if e.prim in (15, 16) else ""
    return template.format(n=e.elem_size, u=e.elem_size // 4, unit=f"[{unit}]" if unit else "")


def array(data, e: Entry) -> tuple[str, tuple[int, ...], memoryview]:
    """A pod or bytes entry as (numpy dtype string, shape, the raw bytes in row-major order)."""
    if e.kind == "archived":
        raise TypeError(f"entry {e.name!r} is archived, not an array")
    return dtype(e), e.dims, memoryview(data)[e.offset : e.offset + e.len]


def elements(data, e: Entry) -> list:
    """The elements of a pod or bytes entry as plain Python values, flat in row-major order:
    numbers, bools, complex as [re, im], NaT as None, strings with their padding removed."""
    _, _, raw = array(data, e)
    raw = bytes(raw)
    n, size = e.count, e.elem_size
    p = e.prim
    if p in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12):
        code = {1: "B", 2: "H", 3: "I", 4: "Q", 5: "b", 6: "h", 7: "i", 8: "q", 9: "f", 10: "d", 12: "e"}[p]
        return list(struct.unpack(f"<{n}{code}", raw))
    if p == 11:
        return [x != 0 for x in raw]
    if p in (13, 14):
        code = "f" if p == 13 else "d"
        flat = struct.unpack(f"<{2 * n}{code}", raw)
        return [[flat[2 * k], flat[2 * k + 1]] for k in range(n)]
    if p in (15, 16):
        return [None if v == -(1 << 63) else v for v in struct.unpack(f"<{n}q", raw)]
    if p == 17:
        return [raw[k * size : (k + 1) * size].rstrip(b"\0").decode("utf-8", "replace") for k in range(n)]
    if p == 18:
        out = []
        for k in range(n):
            cps = struct.unpack_from(f"<{size // 4}I", raw, k * size)
            out.append("".join(chr(c) for c in cps).rstrip("\0"))
        return out
    raise TypeError(f"entry {e.name!r} has opaque elements")


# ---------------------------------------------------------------------------------------------
# The Python bindings' value model (docs/VALUES.md), version 1, in rkyv 0.8's layout.

VALUE_TYPE_NAMES = ("shmarena_py::value::Value",)
MAX_DEPTH = 1000


class _Walker:
    def __init__(self, data, start: int, end: int, pointer_width: int):
        if pointer_width not in (4, 8):
            raise FormatError("incompatible", f"pointer width {pointer_width}")
        self.d = memoryview(data)
        self.start, self.end = start, end
        self.w = pointer_width
        self.ufmt = "<I" if pointer_width == 4 else "<Q"
        self.ifmt = "<i" if pointer_width == 4 else "<q"
        # Offsets inside the archived types (docs/VALUES.md, "Layouts").
        w = pointer_width
        self.value_size = 32 if w == 4 else 56
        self.key_size = 16 if w == 4 else 24
        self.entry_value_at = self.key_size  # Entry { key, value }: value after the key
        self.entry_size = self.key_size + self.value_size

    def _check(self, at: int, n: int) -> None:
        if at < self.start or at + n > self.end:
            raise FormatError("corrupted", f"archived value reaches outside its payload at {at}")

    def usize(self, at):
        self._check(at, self.w)
        return struct.unpack_from(self.ufmt, self.d, at)[0]

    def rel(self, at):
        """The target of the relative pointer stored at `at`."""
        self._check(at, self.w)
        return at + struct.unpack_from(self.ifmt, self.d, at)[0]

    def string_bytes(self, at) -> bytes:
        """An ArchivedString at `at` (2w bytes): inline or out of line."""
        self._check(at, 2 * self.w)
        first = self.d[at]
        if first & 0xC0 != 0x80:  # inline: up to 2w bytes, padded with 0xff
            raw = bytes(self.d[at : at + 2 * self.w])
            n = raw.find(b"\xff")
            return raw if n < 0 else raw[:n]
        enc = self.usize(at)
        n = (enc & 0x3F) | ((enc & ~0xFF) >> 2)
        # The offset counts from the start of the string (not from the offset field).
        self._check(at + self.w, self.w)
        target = at + struct.unpack_from(self.ifmt, self.d, at + self.w)[0]
        self._check(target, n)
        return bytes(self.d[target : target + n])

    def vec(self, at) -> tuple[int, int]:
        """An ArchivedVec at `at`: (position of element 0, length)."""
        return self.rel(at), self.usize(at + self.w)

    def key(self, at):
        self._check(at, self.key_size)
        tag = self.d[at]
        if tag == 0:
            return self.string_bytes(at + 4 if self.w == 4 else at + 8).decode("utf-8")
        if tag == 1:
            self._check(at + 8, 8)
            return struct.unpack_from("<q", self.d, at + 8)[0]
        if tag == 2:
            pos, n = self.vec(at + (4 if self.w == 4 else 8))
            self._check(pos, n)
            return bytes(self.d[pos : pos + n])
        raise FormatError("corrupted", f"unknown key tag {tag} at {at}")

    def value(self, at, depth=0):
        if depth > MAX_DEPTH:
            raise FormatError("corrupted", "value nested too deeply")
        self._check(at, self.value_size)
        tag = self.d[at]
        f = at + (4 if self.w == 4 else 8)  # the first field of a pointer-aligned variant
        if tag == 0:
            return None
        if tag == 1:
            return self.d[at + 1] != 0
        if tag == 2:
            return struct.unpack_from("<q", self.d, at + 8)[0]
        if tag == 3:
            return struct.unpack_from("<d", self.d, at + 8)[0]
        if tag == 4:
            return self.string_bytes(f).decode("utf-8")
        if tag == 5:
            pos, n = self.vec(f)
            self._check(pos, n)
            return bytes(self.d[pos : pos + n])
        if tag in (6, 7):
            pos, n = self.vec(f)
            self._check(pos, n * self.value_size)
            items = [self.value(pos + k * self.value_size, depth + 1) for k in range(n)]
            return items if tag == 6 else tuple(items)
        if tag == 8:
            # ArchivedIndexMap: table { ptr, len, cap }, then entries (a relative pointer).
            n = self.usize(f + self.w)
            pos = self.rel(f + 3 * self.w)
            self._check(pos, n * self.entry_size)
            out = {}
            for k in range(n):
                e = pos + k * self.entry_size
                out[self.key(e)] = self.value(e + self.entry_value_at, depth + 1)
            return out
        if tag == 9:
            # Array { dtype: String, shape: Vec<u64>, data: Vec<u8> }
            dtype = self.string_bytes(f).decode("ascii")
            spos, ndim = self.vec(f + 2 * self.w)
            self._check(spos, 8 * ndim)
            shape = struct.unpack_from(f"<{ndim}Q", self.d, spos)
            dpos, n = self.vec(f + 4 * self.w)
            self._check(dpos, n)
            return ArrayValue(dtype, tuple(shape), bytes(self.d[dpos : dpos + n]))
        raise FormatError("corrupted", f"unknown value tag {tag} at {at}")


@dataclass
class ArrayValue:
    """A numpy array inside a value: `numpy.frombuffer(data, dtype).reshape(shape)`."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


def value(data, layout: Layout, name: str):
    """An archived entry written by the Python bindings (`Builder.put`), as plain Python
    objects: dict, list, tuple, str, bytes, int, float, bool, None and `ArrayValue`."""
    e = layout.find(name)
    if e.kind != "archived" or e.type_name not in VALUE_TYPE_NAMES:
        raise TypeError(f"entry {name!r} is not a shmarena-py value (type {e.type_name!r})")
    w = _Walker(data, e.offset, e.offset + e.len, layout.header.pointer_width)
    if e.elem_size != w.value_size:
        raise FormatError("corrupted", f"value root of {e.elem_size} bytes, expected {w.value_size}")
    return w.value(e.offset + e.root_pos)

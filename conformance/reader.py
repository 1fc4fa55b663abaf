"""A reader of shmarena arenas written only from docs/FORMAT.md and docs/VALUES.md.

Plain Python, no compiled extension, no shmarena code: it exists to show that the documents are
enough, to read and to refuse, and CI checks that it agrees with the Rust reader (`arena-inspect
verify`) and the Python bindings on every fixture arena, sound or damaged (`run.py`,
`crates/shmarena-py/tests/test_conformance.py`).

    layout = parse(data)          # header + table of contents, FORMAT.md's checks in order
    verify(data)                  # + every payload checksum (C3)
    dtype, shape, raw = array(data, layout.entries[i], layout)   # FORMAT.md D1, side table
    value(data, layout, "name")   # a Python value (VALUES.md, model 1): identity by
                                  # fingerprint, validation V1-V7, arrays A1-A4

Every refusal of damaged bytes is a `FormatError` whose `cls` is one of the five classes of
FORMAT.md: "not-an-arena", "incompatible", "truncated", "corrupted", "still-building". Reading
an entry of another type as a value is a `TypeMismatch` (not damage). `pointer_width`: the
width this reader is told to read (FORMAT.md H8), 4 by default.
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
            count = shape_elements(shape, e.elem_size)
            if count is None:
                raise bad("shape larger than 2^63 - 1 bytes")
            if count != e.count:
                raise bad("shape does not hold count elements")
            e.shape = tuple(shape)
    return e


def verify(data, pointer_width: int = 4) -> Layout:
    """`parse` and then every payload checksum, in table order (FORMAT.md check C3)."""
    layout = parse(data, pointer_width)
    for e in layout.entries:
        if xxh3_64(data[e.offset : e.offset + e.len]) != e.checksum:
            raise FormatError("corrupted", f"entry {e.name!r}: payload checksum")
    return layout


DTYPE_UNITS = TIME_UNITS[1:]
MAX_ARRAY_BYTES = (1 << 63) - 1  # numpy's limit on an array's size in bytes
_MAX_INT = (1 << 31) - 1


def _positive(digits: str, most: int) -> int | None:
    """A decimal without leading zeros, 1 to `most`."""
    if not digits or digits[0] == "0" or not all("0" <= c <= "9" for c in digits):
        return None
    n = int(digits)
    return n if n <= most else None


def dtype_itemsize(s: str) -> int | None:
    """The element size of a dtype string that follows VALUES.md's grammar, else None."""
    fixed = {"|b1": 1, "|i1": 1, "|u1": 1, "<i2": 2, "<u2": 2, "<f2": 2, "<i4": 4, "<u4": 4,
             "<f4": 4, "<i8": 8, "<u8": 8, "<f8": 8, "<c8": 8, "<f16": 16, "<c16": 16,
             "<c32": 32, "<M8": 8, "<m8": 8}
    if s in fixed:
        return fixed[s]
    if s.startswith("|S"):
        return _positive(s[2:], _MAX_INT)
    if s.startswith("<U"):
        n = _positive(s[2:], _MAX_INT // 4)
        return None if n is None else 4 * n
    if s[:4] in ("<M8[", "<m8[") and s.endswith("]"):
        unit = s[4:-1]
        k = 0
        while k < len(unit) and "0" <= unit[k] <= "9":
            k += 1
        mult, unit = unit[:k], unit[k:]
        if mult and (_positive(mult, _MAX_INT) or 0) < 2:
            return None
        return 8 if unit in DTYPE_UNITS else None
    return None


def shape_elements(shape, elem_size: int) -> int | None:
    """FORMAT.md E16 / VALUES.md A2: the number of elements of `shape` (0 if any dimension is
    0), or None if the non-zero dimensions times `elem_size` exceed 2^63 - 1."""
    nbytes = max(elem_size, 1)
    for d in shape:
        if d:
            nbytes *= d
            if nbytes > MAX_ARRAY_BYTES:
                return None
    return 0 if 0 in shape else nbytes // max(elem_size, 1)


def dtype(e: Entry) -> str:
    """The numpy dtype string (`numpy.dtype(s)` accepts it) of a pod or bytes entry: from
    `prim`, or for an opaque element the dtype after `numpy:` in the type name (checked: the
    grammar and the element size), else `|V<elem_size>`."""
    if e.kind == "bytes":
        return "|u1"
    if e.prim == 0:
        if e.type_name.startswith("numpy:"):  # the Python bindings' opaque numpy dtypes
            s = e.type_name[len("numpy:") :]
            if dtype_itemsize(s) != e.elem_size:
                raise FormatError("corrupted", f"entry {e.name!r}: type name {e.type_name!r} "
                                  f"does not name a dtype of {e.elem_size}-byte elements")
            return s
        return f"|V{e.elem_size}"
    template = PRIMS[e.prim][2]
    unit = TIME_UNITS[e.prim_arg] if e.prim in (15, 16) else ""
    return template.format(n=e.elem_size, u=e.elem_size // 4, unit=f"[{unit}]" if unit else "")


def array(data, e: Entry, layout: Layout | None = None) -> tuple[str, tuple[int, ...], memoryview]:
    """A pod or bytes entry as (numpy dtype string, shape, the raw bytes in row-major order).
    With `layout`, an arena that has the bindings' old side table (VALUES.md, "Top-level
    arrays") gives the dtype and shape recorded there."""
    if e.kind == "archived":
        raise TypeError(f"entry {e.name!r} is archived, not an array")
    row = side_table(data, layout).get(e.name) if layout is not None else None
    if row is None:
        dt, shape = dtype(e), e.dims
    else:
        dt, shape = row
        size = dtype_itemsize(dt)
        if size is None or shape_elements(shape, size) is None or \
                shape_elements(shape, size) * size != e.len:
            raise FormatError("corrupted", f"side-table row {e.name!r}: {dt} {shape} does not "
                              f"describe {e.len} bytes")
    return dt, shape, memoryview(data)[e.offset : e.offset + e.len]


SIDE_TABLE = "shmarena-py/arrays"


def side_table(data, layout: Layout) -> dict:
    """The bindings' old array side table: {entry name: (dtype, shape)}, {} if there is none."""
    if not any(x.name == SIDE_TABLE for x in layout.entries):
        return {}
    try:
        table = value(data, layout, SIDE_TABLE)
    except TypeMismatch:
        return {}
    out = {}
    if not isinstance(table, dict):
        raise FormatError("corrupted", "the array side table is not a dict")
    for k, row in table.items():
        ok = (isinstance(k, str) and isinstance(row, tuple) and len(row) == 2
              and isinstance(row[0], str) and isinstance(row[1], list)
              and all(type(d) is int and d >= 0 for d in row[1]))
        if not ok:
            raise FormatError("corrupted", f"side-table row {k!r} is not (dtype, [dims...])")
        out[k] = (row[0], tuple(row[1]))
    return out


def elements(data, e: Entry) -> list:
    """The elements of a pod or bytes entry as plain Python values, flat in row-major order:
    numbers, bools, complex as [re, im], NaT as None, strings with their padding removed."""
    raw = bytes(data[e.offset : e.offset + e.len])
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

VALUE_TYPE_NAME = "shmarena_py::value::Value"
VALUE_TYPE_HASH = xxh3_64(VALUE_TYPE_NAME.encode())
MAX_DEPTH = 200  # shmarena.MAX_DEPTH: the deepest node `put` writes (the root is at depth 0)
MAX_CLAIM_DEPTH = MAX_DEPTH + 2  # VALUES.md V4
GROUP = 16  # rkyv's MAX_GROUP_WIDTH: the hash table's control bytes come in groups of 16


class TypeMismatch(Exception):
    """The entry is not a value of the model (another fingerprint): not damage, another type."""

    cls = "type-mismatch"


def value_sizes(w: int) -> tuple[int, int]:
    """(size of a Value, size of a Key) for pointer width `w`."""
    return (32, 16) if w == 4 else (56, 24)


class _Validator:
    """VALUES.md "What a reader refuses", V1-V9: rkyv 0.8's bytecheck rules for the value
    model, in the order bytecheck applies them. `lo`/`hi` is the range a claim may take."""

    def __init__(self, data, start: int, end: int, w: int):
        self.d = memoryview(data)
        self.lo, self.hi = start, end
        self.w = w
        self.value_size, self.key_size = value_sizes(w)
        self.depth = 0

    def bad(self, why: str):
        return FormatError("corrupted", f"archived value: {why}")

    def usize(self, at):
        return int.from_bytes(self.d[at : at + self.w], "little")

    def isize(self, at):
        return int.from_bytes(self.d[at : at + self.w], "little", signed=True)

    def claim(self, at: int, size: int, align: int, children=None) -> None:
        """V3-V5: bytes `at .. at + size` lie in the current range and are aligned; what they
        point to lies below them; whatever comes next lies after them."""
        if at < self.lo or at + size > self.hi:
            raise self.bad(f"{size} bytes at {at} outside {self.lo}..{self.hi}")
        if at % align:
            raise self.bad(f"{at} is not {align}-aligned")
        self.depth += 1
        if self.depth > MAX_CLAIM_DEPTH:
            raise self.bad(f"claims nested deeper than {MAX_CLAIM_DEPTH}")
        hi = self.hi
        self.hi = at
        if children is not None:
            children()
        self.depth -= 1
        self.lo, self.hi = at + size, hi

    def utf8(self, at: int, n: int) -> None:
        try:
            bytes(self.d[at : at + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.bad(f"string at {at} is not UTF-8") from e

    def string(self, at: int) -> None:
        w = self.w
        if self.d[at] & 0xC0 != 0x80:  # inline
            raw = bytes(self.d[at : at + 2 * w])
            n = raw.find(b"\xff")
            self.utf8(at, 2 * w if n < 0 else n)
            return
        enc = self.usize(at)
        n = (enc & 0x3F) | ((enc & ~0xFF) >> 2)
        if n <= 2 * w:
            raise self.bad(f"out-of-line string at {at} of {n} bytes, which fit inline")
        target = at + self.isize(at + w)
        self.claim(target, n, 1, lambda: self.utf8(target, n))

    def vec(self, at: int, elem: int, align: int, each=None) -> None:
        target, n = at + self.isize(at), self.usize(at + self.w)
        def children():
            if each is not None:
                for k in range(n):
                    each(target + k * elem)
        self.claim(target, n * elem, align, children)

    def key(self, at: int) -> None:
        tag = self.d[at]
        f = at + self.w
        if tag == 0:
            self.string(f)
        elif tag == 2:
            self.vec(f, 1, 1)
        elif tag != 1:
            raise self.bad(f"key tag {tag} at {at}")

    def table(self, at: int) -> None:
        """V7: the hash table beside a dict's entries."""
        w = self.w
        n, cap = self.usize(at + w), self.usize(at + 2 * w)
        if n == 0 and cap == 0:
            return
        if n >= cap:
            raise self.bad(f"hash table of length {n} and capacity {cap} at {at}")
        controls = (cap + GROUP - 1) // GROUP * GROUP + GROUP - 1
        ctrl = at + self.isize(at)
        def children():
            full = sum(1 for b in self.d[ctrl : ctrl + cap] if b < 0x80)
            if full != n:
                raise self.bad(f"hash table at {at} has {full} full buckets, length {n}")
            for i in range(cap, min(2 * cap, controls - cap)):
                if self.d[ctrl + i] != self.d[ctrl + i - cap]:
                    raise self.bad(f"hash table at {at}: control byte {i} is not wrapped")
        self.claim(ctrl - cap * w, cap * w + controls, w, children)

    def value(self, at: int) -> None:
        tag = self.d[at]
        w = self.w
        f = at + w
        if tag > 9:
            raise self.bad(f"value tag {tag} at {at}")
        if tag == 1 and self.d[at + 1] > 1:
            raise self.bad(f"bool {self.d[at + 1]} at {at}")
        elif tag == 4:
            self.string(f)
        elif tag == 5:
            self.vec(f, 1, 1)
        elif tag in (6, 7):
            self.vec(f, self.value_size, 8, self.value)
        elif tag == 8:
            self.table(f)
            entry = self.key_size + self.value_size
            target, n = f + 3 * w + self.isize(f + 3 * w), self.usize(f + w)
            def children():
                for k in range(n):
                    self.key(target + k * entry)
                    self.value(target + k * entry + self.key_size)
            self.claim(target, n * entry, 8, children)
        elif tag == 9:
            self.string(f)
            self.vec(f + 2 * w, 8, 8)
            self.vec(f + 4 * w, 1, 1)


def validate(data, e: Entry, w: int) -> None:
    """VALUES.md V1-V9 on archived entry `e`: what rkyv's bytecheck refuses, as *corrupted*."""
    v = _Validator(data, e.offset, e.offset + e.len, w)
    root = e.offset + e.root_pos
    v.claim(root, v.value_size, 8, lambda: v.value(root))


class _Walker:
    """Decodes a validated value (VALUES.md, "Layouts"); arrays are checked with A1-A4."""

    def __init__(self, data, w: int):
        self.d = memoryview(data)
        self.w = w
        self.value_size, self.key_size = value_sizes(w)

    def usize(self, at):
        return int.from_bytes(self.d[at : at + self.w], "little")

    def rel(self, at):
        return at + int.from_bytes(self.d[at : at + self.w], "little", signed=True)

    def string_bytes(self, at) -> bytes:
        w = self.w
        if self.d[at] & 0xC0 != 0x80:  # inline: up to 2w bytes, padded with 0xff
            raw = bytes(self.d[at : at + 2 * w])
            n = raw.find(b"\xff")
            return raw if n < 0 else raw[:n]
        enc = self.usize(at)
        n = (enc & 0x3F) | ((enc & ~0xFF) >> 2)
        # The offset counts from the start of the string (not from the offset field).
        target = at + int.from_bytes(self.d[at + w : at + 2 * w], "little", signed=True)
        return bytes(self.d[target : target + n])

    def vec(self, at) -> tuple[int, int]:
        return self.rel(at), self.usize(at + self.w)

    def key(self, at):
        tag = self.d[at]
        if tag == 0:
            return self.string_bytes(at + self.w).decode("utf-8")
        if tag == 1:
            return struct.unpack_from("<q", self.d, at + 8)[0]
        pos, n = self.vec(at + self.w)
        return bytes(self.d[pos : pos + n])

    def value(self, at):
        tag = self.d[at]
        f = at + self.w  # the first field of a pointer-aligned variant
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
            return bytes(self.d[pos : pos + n])
        if tag in (6, 7):
            pos, n = self.vec(f)
            items = [self.value(pos + k * self.value_size) for k in range(n)]
            return items if tag == 6 else tuple(items)
        if tag == 8:
            # ArchivedIndexMap: table { ptr, len, cap }, then entries (a relative pointer).
            n = self.usize(f + self.w)
            pos = self.rel(f + 3 * self.w)
            out = {}
            entry = self.key_size + self.value_size
            for k in range(n):
                e = pos + k * entry
                out[self.key(e)] = self.value(e + self.key_size)
            return out
        # tag 9, Array { dtype: String, shape: Vec<u64>, data: Vec<u8> }: A1-A4.
        dtype = self.string_bytes(f).decode("utf-8")
        spos, ndim = self.vec(f + 2 * self.w)
        shape = struct.unpack_from(f"<{ndim}Q", self.d, spos)
        dpos, n = self.vec(f + 4 * self.w)
        size = dtype_itemsize(dtype)
        if size is None:
            raise FormatError("corrupted", f"array at {at}: dtype {dtype!r} breaks the grammar")
        count = shape_elements(shape, size)
        if count is None:
            raise FormatError("corrupted", f"array at {at}: shape {shape} beyond numpy's limit")
        if count * size != n:
            raise FormatError("corrupted", f"array at {at}: {dtype} {shape} is not {n} bytes")
        if dpos % 16:
            raise FormatError("corrupted", f"array at {at}: data at {dpos} not 16-aligned")
        return ArrayValue(dtype, tuple(shape), bytes(self.d[dpos : dpos + n]))


@dataclass
class ArrayValue:
    """A numpy array inside a value: `numpy.frombuffer(data, dtype).reshape(shape)`."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


def is_value(e: Entry, w: int) -> bool:
    """Whether entry `e` has the value model's fingerprint (VALUES.md: its identity)."""
    return (e.kind, e.type_hash, e.elem_size, e.align) == ("archived", VALUE_TYPE_HASH,
                                                           value_sizes(w)[0], 8)


def value(data, layout: Layout, name: str):
    """An archived entry written by the Python bindings (`Builder.put`), as plain Python
    objects: dict, list, tuple, str, bytes, int, float, bool, None and `ArrayValue`.
    `TypeMismatch` if the entry has another fingerprint; `FormatError` if it is corrupt."""
    e = layout.find(name)
    w = layout.header.pointer_width
    if not is_value(e, w):
        raise TypeMismatch(f"entry {name!r} is not a shmarena-py value (type {e.type_name!r})")
    return value_at(data, e, w)


def value_at(data, e: Entry, w: int):
    """Validates (V1-V9) and decodes an archived entry laid out as the value model, whatever
    its type name."""
    validate(data, e, w)
    return _Walker(data, w).value(e.offset + e.root_pos)

"""The spec-only reader (conformance/reader.py, plain Python written from docs/FORMAT.md and
docs/VALUES.md) on arenas written by these bindings: dtype and shape of arrays from the format
itself, Value trees walked byte by byte, and the same verdict as `arena-inspect verify` on the
arenas and thousands of damaged variants of them (when ARENA_INSPECT names the binary)."""

import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import shmarena

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "conformance"))
import reader  # noqa: E402
import run  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"

ARRAYS = {
    "f8_2d": np.arange(12.0).reshape(3, 4),
    "i4_3d": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
    "u1": np.arange(5, dtype=np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "f2": np.array([1.0, -2.5, 65504.0], dtype=np.float16),
    "c8": np.array([1 + 2j, -0.5j], dtype=np.complex64),
    "c16": np.array([[3 - 4j]], dtype=np.complex128),
    "M8ns": np.array(["2024-01-02T03:04:05.000000006", "NaT"], dtype="datetime64[ns]"),
    "M8D": np.array(["1970-01-02"], dtype="datetime64[D]"),
    "M8generic": np.array(["NaT", "NaT"], dtype="datetime64"),
    "m8s": np.array([5, -3], dtype="timedelta64[s]"),
    "M8_10s": np.array([1, 2], dtype="datetime64[10s]"),
    "S5": np.array([b"ab", b"hello"], dtype="S5"),
    "U3": np.array([["hé", "xyz"]], dtype="U3"),
    "longdouble": np.array([1.5, 2.5], dtype=np.longdouble),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "big_endian": np.arange(4, dtype=">i8"),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
}

VALUES = {
    "dict": {
        "short": "abc",
        "eight": "12345678",
        "nine": "123456789",
        "long": "x" * 70,
        "longer": "é" * 9000,
        "empty": "",
        7: [1, -2, 2**63 - 1, -(2**63)],
        b"raw": (1.5, math.inf, None, True, False),
        "bytes": b"\x00\xff" * 40,
        "nested": {"a": [{"b": []}, ()], "arr": np.arange(6, dtype=np.int16).reshape(2, 3)},
    },
    "list": [None, "s", b"", 0.0, [[]], {}],
    "scalar_true": True,
    "scalar_int": -42,
    "scalar_str": "hello world, out of line",
    "array": np.array([[1.0, 2.0]], dtype=np.float32),
}


def _write(path: Path):
    with shmarena.build(path=str(path)) as b:
        for name, arr in ARRAYS.items():
            b.put_array(name, arr)
        for name, v in VALUES.items():
            b.put(name, v)
    b.arena.close()
    return path.read_bytes()


def _same(got, want):
    if isinstance(want, np.ndarray):
        assert isinstance(got, reader.ArrayValue)
        arr = np.frombuffer(got.data, dtype=got.dtype).reshape(got.shape)
        assert arr.dtype == want.dtype and np.array_equal(arr, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for k in want:
            _same(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
    else:
        assert type(got) is type(want) and got == want, (got, want)


def test_reader_reads_arrays_with_dtype_and_shape_from_the_format(tmp_path):
    data = _write(tmp_path / "a.arena")
    layout = reader.verify(data)
    assert layout.header.version == 2
    names = [e.name for e in layout.entries]
    assert "shmarena-py/arrays" not in names, "new arenas need no side table"
    for name, want in ARRAYS.items():
        e = layout.find(name)
        dtype, shape, raw = reader.array(data, e)
        native = want.dtype.newbyteorder("=")
        assert np.dtype(dtype) == native, (name, dtype)
        assert shape == want.shape, name
        got = np.frombuffer(raw, dtype=dtype).reshape(shape)
        assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fcmM"), name
        # The bindings read back the same dtype and shape.
    arena = shmarena.open(path=str(tmp_path / "a.arena"))
    try:
        for name, want in ARRAYS.items():
            got = arena[name]
            assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape, name
            assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fcmM"), name
    finally:
        arena.close()
    # Primitives of the format where numpy has one; the rest opaque with their dtype named.
    assert layout.find("bool").prim == 11 and layout.find("M8ns").prim_arg == 10
    assert layout.find("S5").elem_size == 5 and layout.find("U3").elem_size == 12
    assert layout.find("M8_10s").type_name == "numpy:<M8[10s]"
    assert layout.find("f8_2d").type_name == "f64"  # a Rust reader's `slice::<f64>` works


def test_reader_walks_python_values(tmp_path):
    data = _write(tmp_path / "v.arena")
    layout = reader.parse(data)
    for name, want in VALUES.items():
        e = layout.find(name)
        assert e.type_name == "shmarena_py::value::Value"
        _same(reader.value(data, layout, name), want)


def test_value_layout_offsets(tmp_path):
    """The byte offsets docs/VALUES.md states, checked on real bytes."""
    with shmarena.build(path=str(tmp_path / "o.arena")) as b:
        b.put("t", True)
        b.put("i", -2)
        b.put("f", 0.5)
        b.put("s", "inline")
        b.put("l", "a longer string")
        b.put("m", {"k": 1})
    b.arena.close()
    data = (tmp_path / "o.arena").read_bytes()
    layout = reader.parse(data)

    def root(name):
        e = layout.find(name)
        assert (e.elem_size, e.align) == (32, 8), "ArchivedValue: 32 bytes, 8-aligned"
        return e.offset + e.root_pos

    r = root("t")
    assert data[r] == 1 and data[r + 1] == 1  # tag Bool, then the bool byte
    r = root("i")
    assert data[r] == 2 and struct.unpack_from("<q", data, r + 8)[0] == -2  # Int at +8
    r = root("f")
    assert data[r] == 3 and struct.unpack_from("<d", data, r + 8)[0] == 0.5  # Float at +8
    r = root("s")
    assert data[r] == 4 and data[r + 4 : r + 12] == b"inline\xff\xff"  # inline string at +4
    r = root("l")
    enc, off = struct.unpack_from("<Ii", data, r + 4)
    assert data[r] == 4 and enc == (15 & 0x3F) | 0x80  # out of line: length 15, flag 0x80
    assert data[r + 4 + off : r + 4 + off + 15] == b"a longer string"  # from the string's start
    r = root("m")
    assert data[r] == 8
    ptr, n, cap = struct.unpack_from("<iII", data, r + 4)  # swiss table: ptr, len, cap
    assert n == 1 and cap >= 1
    entries = r + 16 + struct.unpack_from("<i", data, r + 16)[0]
    assert data[entries] == 0 and data[entries + 4 : entries + 6] == b"k\xff"  # Key::Str
    assert data[entries + 16] == 2 and data[entries + 24] == 1  # value Int(1) after the key


def test_old_arenas_with_the_side_table_still_read():
    """An arena written by the bindings before format version 2 (dtype and shape in the
    reserved `shmarena-py/arrays` entry) reads with its dtypes and shapes."""
    path = FIXTURES / "v1-side-table.arena"
    if not path.exists():
        pytest.skip("fixture missing")
    data = path.read_bytes()
    layout = reader.verify(data)
    assert layout.header.version == 1
    assert "shmarena-py/arrays" in [e.name for e in layout.entries]
    arena = shmarena.open(path=str(path))
    try:
        assert "shmarena-py/arrays" not in arena
        grid = arena["grid"]
        assert grid.dtype == np.float64 and grid.shape == (3, 4)
        assert np.array_equal(grid, np.arange(12.0).reshape(3, 4))
        when = arena["when"]
        assert when.dtype == np.dtype("datetime64[ns]") and when.shape == (2,)
        assert arena["flags"].dtype == np.bool_ and arena["flags"].shape == (2, 2)
        assert arena["v"]["k"] == [1, 2]
    finally:
        arena.close()


SMOKE = pytest.mark.skipif(
    os.environ.get("SHMARENA_SMOKE") == "1",
    reason="the whole conformance agreement runs in the full suite only (ci.sh's smoke runs skip it)",
)


@SMOKE
@pytest.mark.skipif(not os.environ.get("ARENA_INSPECT"), reason="set ARENA_INSPECT to arena-inspect")
def test_python_arenas_agree_with_arena_inspect_and_the_bindings(tmp_path):
    """Three judges, one class: the spec-only reader, `arena-inspect verify` and the bindings
    on arenas the bindings wrote and every damaged variant of them, the values damaged inside
    (pointers, lengths, hash tables, strings, arrays) with every checksum fixed included."""
    src = tmp_path / "src"
    src.mkdir()
    with shmarena.build(path=str(src / "py-arrays.arena")) as b:
        for name in ["f8_2d", "bool", "M8ns", "U3", "empty", "scalar", "M8_10s"]:
            b.put_array(name, ARRAYS[name])
    b.arena.close()
    with shmarena.build(path=str(src / "py-values.arena")) as b:
        b.put("v", {"a": [1, "two", b"3"], 4: (None, 0.5), "arr": np.arange(3)})
        b.put("w", {"k": "a string out of line", "d": {"x": True}, "f": np.ones((1, 2), "<f4")})
    b.arena.close()
    paths = sorted(src.glob("*.arena"))
    if FIXTURES.joinpath("v1-side-table.arena").exists():
        paths.append(FIXTURES / "v1-side-table.arena")
    n, bad = run.run(paths, os.environ["ARENA_INSPECT"], bindings=True)
    assert not bad, "\n".join(bad[:20])
    assert n > 5000


@SMOKE
@pytest.mark.skipif(
    not os.environ.get("SHMARENA_CONFORMANCE_FIXTURES"),
    reason="set SHMARENA_CONFORMANCE_FIXTURES to the conformance_fixtures example's output",
)
def test_rust_fixtures_agree_with_the_bindings():
    """The Rust-written fixtures (which CI's conformance step judges with `arena-inspect`) and
    their damaged variants: the bindings give the reader's class on each, and read what it reads."""
    paths = sorted(Path(os.environ["SHMARENA_CONFORMANCE_FIXTURES"]).glob("*.arena"))
    assert paths
    n, bad = run.run(paths, None, bindings=True)
    assert not bad, "\n".join(bad[:20])
    assert n > 5000


# Damaged arenas, each refused with the typed error of its class (never numpy's ValueError,
# TypeError or SyntaxError, never a crash).


def _forge(path: Path, name: str, edit) -> None:
    """Edits entry `name`'s payload with `edit(bytearray, root position)` and fixes every
    checksum, so that only the value's own rules can catch the damage."""
    data = bytearray(path.read_bytes())
    e = reader.parse(bytes(data)).find(name)
    edit(data, e.offset + e.root_pos)
    run._reseal_payload(data, e.index, e.offset, e.len)
    path.write_bytes(bytes(data))


def _read(path: Path, name: str):
    arena = shmarena.open(path=str(path))
    try:
        x = arena[name]
        return x.to_python() if isinstance(x, (shmarena.MapView, shmarena.ListView)) else x
    finally:
        arena.close()


def _array_entry(tmp_path, array):
    path = tmp_path / "a.arena"
    with shmarena.build(path=str(path)) as b:
        b.put("a", array)
    b.arena.close()
    return path


def test_array_with_a_damaged_dtype_string_is_corrupted(tmp_path):
    path = _array_entry(tmp_path, np.arange(3, dtype="<i2"))
    _forge(path, "a", lambda d, r: d.__setitem__(slice(r + 4, r + 7), b",i2"))  # numpy: SyntaxError
    with pytest.raises(shmarena.CorruptedError, match="dtype"):
        _read(path, "a")
    data = path.read_bytes()
    with pytest.raises(reader.FormatError, match="grammar"):
        reader.value(data, reader.parse(data), "a")


@pytest.mark.parametrize(
    "dims, match",
    [((0, 2**62), "numpy's limit"), ((2**62, 0), "numpy's limit"), ((2, 1), "needs 16 bytes")],
)
def test_array_shape_against_its_data(tmp_path, dims, match):
    path = _array_entry(tmp_path, np.zeros((1, 1), dtype="<f8"))

    def edit(d, r):
        shape = r + 12 + struct.unpack_from("<i", d, r + 12)[0]
        struct.pack_into("<QQ", d, shape, *dims)

    _forge(path, "a", edit)
    with pytest.raises(shmarena.CorruptedError, match=match):
        _read(path, "a")
    data = path.read_bytes()
    with pytest.raises(reader.FormatError):
        reader.value(data, reader.parse(data), "a")


def test_array_data_must_be_16_aligned(tmp_path):
    path = _array_entry(tmp_path, np.zeros(1, dtype="|u1"))
    _forge(path, "a", lambda d, r: struct.pack_into("<i", d, r + 20, struct.unpack_from("<i", d, r + 20)[0] + 1))
    with pytest.raises(shmarena.CorruptedError, match="16-aligned"):
        _read(path, "a")
    data = path.read_bytes()
    with pytest.raises(reader.FormatError, match="16-aligned"):
        reader.value(data, reader.parse(data), "a")


def test_opaque_pod_dtype_comes_from_prim_and_a_checked_numpy_name(tmp_path):
    """An opaque entry's dtype is the one after `numpy:` only if it parses and fits the
    element size; a damaged prefix reads as raw `V<n>` elements, not an error or another type."""
    path = tmp_path / "p.arena"
    with shmarena.build(path=str(path)) as b:
        b.put_array("t", ARRAYS["M8_10s"])
    b.arena.close()
    data = path.read_bytes()
    layout = reader.parse(data)
    e = layout.find("t")
    names = layout.header.toc_offset + 96 * len(layout.entries)
    at = names + struct.unpack_from("<I", data, layout.header.toc_offset + 64)[0]
    assert data[at : at + len(e.type_name)] == b"numpy:<M8[10s]"

    def damaged(new: bytes) -> Path:
        b = bytearray(data)
        b[at : at + len(new)] = new
        run._reseal_toc(b)
        out = tmp_path / f"d{len(list(tmp_path.iterdir()))}.arena"
        out.write_bytes(bytes(b))
        return out

    got = _read(damaged(b"numpx:"), "t")  # no longer a numpy name: opaque bytes
    assert got.dtype == np.dtype("V8") and got.tobytes() == ARRAYS["M8_10s"].tobytes()
    for bad in (b"numpy:<M8[10s}", b"numpy:<f16\0\0\0\0", b"numpy:,i2"):
        p = damaged(bad)
        with pytest.raises(shmarena.CorruptedError, match="type name"):
            _read(p, "t")
        d = p.read_bytes()
        with pytest.raises(reader.FormatError):
            reader.dtype(reader.parse(d).find("t"))


def test_values_nested_past_the_bound_are_refused_without_a_crash(tmp_path):
    """A forged list nested 300,000 levels deep (9.6 MB) overflowed the stack of an unbounded
    validator (SIGSEGV); it is refused after 202 claims. Run in a child: a crash fails the test."""
    depth = 300_000
    path = tmp_path / "deep.arena"
    with shmarena.build(path=str(path)) as b:
        b.put("v", b"x" * (32 * depth + 64))
        b.put("ok", [[[[1]]]])
    b.arena.close()

    def edit(d, r):
        start = r - 32 * depth
        d[start : start + 32] = bytes(32)
        for k in range(1, depth + 1):
            at = start + 32 * k
            d[at : at + 32] = struct.pack("<B3xiI", 6, -36, 1) + bytes(20)

    _forge(path, "v", edit)
    code = (
        "import shmarena, sys\n"
        f"a = shmarena.open(path={str(path)!r})\n"
        "assert a['ok'].to_python() == [[[[1]]]]\n"
        "try:\n    a['v']\nexcept shmarena.CorruptedError as e:\n"
        "    assert '202' in str(e), e\n    sys.exit(0)\nsys.exit(3)\n"
    )
    import subprocess

    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    data = path.read_bytes()
    with pytest.raises(reader.FormatError, match="202"):
        reader.value(data, reader.parse(data), "v")


def test_a_hash_bucket_past_the_entries_is_corrupted(tmp_path):
    """bytecheck does not check what buckets hold; a lookup through a damaged one is a typed
    error (rkyv's lookup would panic), while walking the entries still reads."""
    path = tmp_path / "m.arena"
    with shmarena.build(path=str(path)) as b:
        b.put("m", {"k": 1})
    b.arena.close()

    def edit(d, r):
        ctrl = r + 4 + struct.unpack_from("<i", d, r + 4)[0]
        struct.pack_into("<I", d, ctrl - 4, 9)  # bucket 0 (just below the control bytes)

    _forge(path, "m", edit)
    arena = shmarena.open(path=str(path))
    try:
        m = arena["m"]
        assert m.to_python() == {"k": 1}
        with pytest.raises(shmarena.CorruptedError, match="hash table"):
            m["k"]
    finally:
        arena.close()


def test_error_classes(tmp_path):
    """Each of FORMAT.md's classes is its own `FormatError` subclass; a type mismatch is a
    `ShmarenaError` and a `TypeError`."""
    assert issubclass(shmarena.CorruptedError, shmarena.FormatError)
    assert issubclass(shmarena.FormatError, shmarena.ShmarenaError)
    assert issubclass(shmarena.TypeMismatchError, shmarena.ShmarenaError)
    assert issubclass(shmarena.TypeMismatchError, TypeError)
    empty = tmp_path / "empty.arena"
    empty.write_bytes(b"")
    with pytest.raises(shmarena.NotAnArenaError):
        shmarena.open(path=str(empty))
    good = _array_entry(tmp_path, np.arange(3))
    data = good.read_bytes()
    (tmp_path / "short.arena").write_bytes(data[:100])
    with pytest.raises(shmarena.TruncatedError):
        shmarena.open(path=str(tmp_path / "short.arena"))
    v3 = bytearray(data)
    v3[8:12] = struct.pack("<I", 3)
    run._reseal_header(v3)
    (tmp_path / "v3.arena").write_bytes(bytes(v3))
    with pytest.raises(shmarena.IncompatibleError):
        shmarena.open(path=str(tmp_path / "v3.arena"))
    flipped = bytearray(data)
    flipped[200] ^= 1
    (tmp_path / "flip.arena").write_bytes(bytes(flipped))
    with pytest.raises(shmarena.CorruptedError):
        shmarena.open(path=str(tmp_path / "flip.arena"))


def test_the_deepest_value_put_writes_reads_everywhere(tmp_path):
    """A value nested MAX_DEPTH levels with an out-of-line string at the bottom needs all 202
    claims of VALUES.md's V3: the bindings and the reader both read it, and refuse one level
    more (put refuses to write it)."""
    deepest: object = "a string long enough to be out of line"
    for _ in range(shmarena.MAX_DEPTH):
        deepest = [deepest]
    path = tmp_path / "deep.arena"
    with shmarena.build(path=str(path)) as b:
        b.put("v", deepest)
        with pytest.raises(ValueError, match="nested deeper"):
            b.put("w", [deepest])
    b.arena.close()
    assert _read(path, "v") == deepest
    data = path.read_bytes()
    assert reader.value(data, reader.parse(data), "v") == deepest

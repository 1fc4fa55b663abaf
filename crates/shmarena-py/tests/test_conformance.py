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


@pytest.mark.skipif(not os.environ.get("ARENA_INSPECT"), reason="set ARENA_INSPECT to arena-inspect")
def test_python_arenas_agree_with_arena_inspect(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with shmarena.build(path=str(src / "py-arrays.arena")) as b:
        for name in ["f8_2d", "bool", "M8ns", "U3", "empty", "scalar", "M8_10s"]:
            b.put_array(name, ARRAYS[name])
    b.arena.close()
    with shmarena.build(path=str(src / "py-values.arena")) as b:
        b.put("v", {"a": [1, "two", b"3"], 4: (None, 0.5), "arr": np.arange(3)})
    b.arena.close()
    paths = sorted(src.glob("*.arena"))
    if FIXTURES.joinpath("v1-side-table.arena").exists():
        paths.append(FIXTURES / "v1-side-table.arena")
    n, bad = run.run(paths, os.environ["ARENA_INSPECT"])
    assert not bad, "\n".join(bad[:20])
    assert n > 1000

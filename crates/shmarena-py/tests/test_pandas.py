"""The pandas path: view.to_pandas() / arena.to_pandas(name), array columns without a copy,
and what pandas.DataFrame(view) does instead (documented in docs/PYTHON.md)."""

from __future__ import annotations

import numpy as np
import pytest

import shmarena

pd = pytest.importorskip("pandas", reason="pandas is not installed (ci.sh installs it)")


@pytest.fixture
def arena(closing):
    with shmarena.build() as b:
        b.put(
            "table",
            {
                "id": np.arange(6),
                "x": np.linspace(0.0, 1.0, 6),
                "n": [1, 2, 3, 4, 5, 6],
                "f": [0.5, 1, 2, 3, 4, 5],
                "ok": [True, False, True, True, False, True],
                "name": list("abcdef"),
            },
        )
        b.put("counts", {"apple": 3, "pear": 5, "plum": 7})
        b.put("records", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
        b.put("by_key", {"k1": {"a": 1}, "k2": {"a": 2}})
        b.put("ragged", {"a": [1, 2], "b": [1]})
        b.put("words", ["a", "b", "c"])
        b.put_array("E", np.arange(12.0).reshape(3, 4))
        b.put_array("v", np.arange(5, dtype=np.int32))
        b.put_array("cube", np.zeros((2, 2, 2)))
    closing(b.arena)
    return b.arena


def test_a_map_of_columns_is_a_dataframe_with_array_columns_not_copied(arena):
    df = arena.to_pandas("table")
    assert list(df.columns) == ["id", "x", "n", "f", "ok", "name"]
    assert df["id"].dtype == np.int64 and df["x"].dtype == np.float64
    assert df["n"].dtype == np.int64 and df["f"].dtype == np.float64 and df["ok"].dtype == bool
    assert df["name"].tolist() == list("abcdef")
    view = arena["table"]
    for col in ("id", "x"):
        assert np.shares_memory(df[col].to_numpy(), view[col]), col  # over the shared pages
    assert df.equals(view.to_pandas())
    expected = pd.DataFrame({k: np.asarray(v) if not isinstance(v, list) else v for k, v in view.to_python().items()})
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)


def test_other_shapes(arena):
    s = arena["counts"].to_pandas()
    assert s.to_dict() == {"apple": 3, "pear": 5, "plum": 7} and s.dtype == np.int64
    assert arena.to_pandas("records").to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}
    assert arena.to_pandas("by_key").loc["k2", "a"] == 2
    assert arena.to_pandas("words").tolist() == ["a", "b", "c"]
    e = arena.to_pandas("E")
    assert e.shape == (3, 4) and np.shares_memory(e.to_numpy(), arena["E"])
    v = arena.to_pandas("v", name="v")
    assert v.name == "v" and v.dtype == np.int32 and np.shares_memory(v.to_numpy(), arena["v"])
    with pytest.raises(ValueError, match="different lengths"):
        arena.to_pandas("ragged")
    with pytest.raises(ValueError, match="3-D"):
        arena.to_pandas("cube")


def test_dataframe_of_a_view_is_not_the_dict_constructor(arena):
    # What docs/PYTHON.md warns of: pandas treats a Mapping that is not a dict as a sequence of
    # its keys. If pandas ever changes that, the docs must change with it.
    df = pd.DataFrame(arena["table"])
    assert df.shape == (6, 1) and df[0].tolist() == ["id", "x", "n", "f", "ok", "name"]

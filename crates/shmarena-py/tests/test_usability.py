"""What a user meets in the second hour: view reprs with a preview, batch lookups, and service
errors that say what to do (a name this very process publishes; a name another uid publishes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import shmarena


def unique(tag: str) -> str:
    return f"sapy-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


@pytest.fixture
def arena(closing):
    with shmarena.build() as b:
        b.put("lex", {"apple": ("fruit", 0.9), "carrot": ("veg", 0.7), "long": "x" * 100})
        b.put("big", {f"w{i}": i for i in range(1000)})
        b.put("mixed", {"i": 1, "f": 2.5, "b": True, "s": "x"})
        b.put("nested", [[1, [2, [3, [4]]]], {"k": {"k": {"k": 1}}}])
        b.put("one", (1,))
    closing(b.arena)
    return b.arena


def test_reprs_show_a_preview(arena):
    assert repr(arena["lex"]) == (
        "MapView({'apple': ('fruit', 0.9), 'carrot': ('veg', 0.7), 'long': '" + "x" * 40 + "'...}, 3 keys)"
    )
    r = repr(arena["big"])
    assert r.startswith("MapView({'w0': 0, 'w1': 1,") and r.endswith(", ...}, 1000 keys)")
    assert repr(arena["one"]) == "ListView((1,), 1 item)"
    assert repr(arena["nested"]) == "ListView([[1, [...]], {'k': {...}}], 2 items)"
    assert repr(arena["big"]["w3"]) == "3"
    html = arena["lex"]._repr_html_()
    assert "<table>" in html and "&#x27;apple&#x27;" in html and "3 keys" in html

    class Printer:  # IPython's pretty printer, as far as _repr_pretty_ uses it
        def __init__(self):
            self.out = []

        def text(self, s):
            self.out.append(s)

    p = Printer()
    arena["big"]._repr_pretty_(p, False)
    assert p.out == [repr(arena["big"])]


def test_get_many(arena):
    big = arena["big"]
    keys = ["w1", "nope", "w999", 3]
    assert big.get_many(keys) == [1, None, 999, None]
    assert big.get_many(iter(keys), "-") == [1, "-", 999, "-"]
    assert big.get_many([]) == []
    a = big.get_many(keys, -1, as_array=True)
    assert a.dtype == np.int64 and a.tolist() == [1, -1, 999, -1] and a.flags.writeable
    f = arena["mixed"].get_many(["i", "f", "b"], as_array=True)
    assert f.dtype == np.float64 and f.tolist() == [1.0, 2.5, 1.0]
    with pytest.raises(KeyError, match="nope"):
        big.get_many(["w1", "nope"], as_array=True)
    with pytest.raises(TypeError, match="key 's' is a str, not a number"):
        arena["mixed"].get_many(["i", "s"], as_array=True)
    with pytest.raises(TypeError, match="default must be"):
        big.get_many(["w1"], "x", as_array=True)
    # Views come back as views, as from get.
    assert arena["lex"].get_many(["apple"])[0] == ("fruit", 0.9)
    assert len(big.get_many([f"w{i}" for i in range(1000)] * 3)) == 3000


def test_publishing_a_name_this_process_publishes_says_so(arena):
    name = unique("again")
    with arena.publish(name) as pub:
        with pytest.raises(shmarena.AlreadyPublishedError) as e:
            arena.publish(name)
        msg = str(e.value)
        assert "by this process" in msg and "publish(arena)" in msg and "close()" in msg
        pub.publish(arena)  # the way on: a new generation
        assert pub.generation == 2


def test_another_process_holding_the_name_is_not_called_this_one(arena):
    name = unique("other")
    code = textwrap.dedent(
        f"""
        import sys, shmarena
        with shmarena.build() as b:
            b.put("x", 1)
        with b.arena.publish({name!r}):
            print("up", flush=True)
            sys.stdin.readline()
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        with pytest.raises(shmarena.AlreadyPublishedError) as e:
            arena.publish(name)
        assert "by this process" not in str(e.value)
    finally:
        p.communicate("\n", timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a publisher as another uid")
def test_not_published_names_the_uid_that_publishes_it():
    name = unique("uid")
    uid = 65534  # nobody
    code = textwrap.dedent(
        f"""
        import os, sys
        import shmarena  # imported first: the interpreter's files may be readable by root only
        os.setgid({uid}); os.setuid({uid})
        with shmarena.build() as b:
            b.put("x", 1)
        with b.arena.publish({name!r}, allow_uids=[0]):
            print("up", flush=True)
            sys.stdin.readline()
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = p.stdout.readline().strip()
        if line != "up":
            pytest.skip(f"a publisher as uid {uid} could not start here: {p.stderr.read()[-500:]}")
        with pytest.raises(shmarena.NotPublishedError) as e:
            shmarena.connect(name)
        assert f"uid {uid} publishes it" in str(e.value) and f"server_uid={uid}" in str(e.value)
        assert shmarena.connect(name, server_uid=uid)["x"] == 1  # what the hint says works
    finally:
        p.communicate("\n", timeout=60)

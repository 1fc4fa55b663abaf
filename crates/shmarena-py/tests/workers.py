"""Functions run in worker processes by the tests: importable under every start method."""

from __future__ import annotations

import ctypes
import os
import signal

import numpy as np

import shmarena


def lookup(lexicon, centroids, word):
    """What a worker of the classify scenario does: a dict lookup and a numpy reduction."""
    entry = lexicon.get(word)
    label = None if entry is None else entry[0]
    return word, label, float(np.asarray(centroids).sum())


def whoami(view):
    """(pid, ids of arenas attached in this process, len of the view)."""
    return os.getpid(), shmarena.attached_ids(), len(view)


def sum_array(arr):
    return os.getpid(), shmarena.attached_ids(), float(arr.sum()), arr.flags.writeable


def echo(obj):
    return obj


def to_python(view):
    return view.to_python()


def write_with_ctypes(arr):
    """Writes into the shared array behind numpy's back: must die with SIGSEGV."""
    import faulthandler

    faulthandler.disable()  # pytest's handler would print this expected crash
    ctypes.memmove(arr.ctypes.data, b"\xff" * 8, 8)
    return "survived"


def die_on(view, x):
    """Kills its own worker when asked to, mid-task."""
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x, len(view)


def pickle_handle_and_exit(conn):
    """Builds a memfd arena, sends a pickled view of it, and exits (the handle goes stale)."""
    import pickle

    with shmarena.build() as b:
        b.put("v", {"k": [1, 2, 3]})
    conn.send(pickle.dumps(b.arena["v"]))
    conn.close()


def mapping_of(arr):
    """(permissions, path) of the mapping that holds the array's first byte, in this process."""
    addr = arr.ctypes.data
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields[1], fields[5].strip() if len(fields) > 5 else ""
    return None


def build_send_and_wait(conn, done):
    """Builds an arena in this (child) process, sends a pickled view, and keeps it alive until
    the parent has read it."""
    import pickle

    with shmarena.build() as b:
        b.put("v", {"from": "child", "pid": os.getpid(), "arr": np.arange(5.0)})
    conn.send(pickle.dumps(b.arena["v"]))
    done.wait(60)


def close_publisher(pub):
    """Tries to stop a publisher inherited across fork: must do nothing to the parent's."""
    pub.close()
    del pub
    import gc

    gc.collect()

import itertools
import os

import pytest

import shmarena

_counter = itertools.count()


def _ours():
    prefix = f"sapy-{os.getpid()}-"
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


@pytest.fixture
def shm_name():
    """A unique segment name; the test fails if it is still in /dev/shm afterwards."""
    name = f"sapy-{os.getpid()}-{next(_counter)}"
    yield name
    assert not os.path.exists(f"/dev/shm/{name}"), f"/dev/shm/{name} left behind"


@pytest.fixture(autouse=True)
def no_leftover_segments():
    before = _ours()
    yield
    assert _ours() == before, "named segments left in /dev/shm"


@pytest.fixture
def closing():
    """Collects arenas to close after the test so the pytest process does not pile them up."""
    arenas = []
    yield arenas.append
    for a in arenas:
        a.close()

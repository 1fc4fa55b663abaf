"""Trust rows from another process are an explicit opt-in (issue 20, path 6).

A pickle's trust token says which entries the pickling process knows valid; nothing proves the
pickle came from there. Python code without ctypes can build a handle by hand: a crafted sealed
memfd (``os.memfd_create`` + ``F_ADD_SEALS``), its inode, and the build identity and rows of a
genuine pickle. ``_restore`` takes the token only after ``shmarena.trust_pickled_rows()``;
without it the entry is validated and the forgery is a typed error, never a crash. Each attack
runs in a fresh interpreter, so a crash fails the test with the child's status."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import shmarena

LENGTH = 1234  # the list's length: its little-endian u32 is what the forgery patches


def _token_span(handle: bytes) -> tuple[int, int]:
    """(start, end) of the trust token in handle bytes (version 2, locator tag 3)."""
    assert handle[0] == 2 and handle[17] == 3
    p = 19 + handle[18]  # locator text (short: one-byte length)
    p += 1 + handle[p]  # entry name
    n = handle[p]  # token length (under 128 here: one byte)
    return p + 1, p + 1 + n


def _genuine(tmp_path, closing) -> tuple[bytes, bytes]:
    """A genuine pickle's handle of entry "v" (a list of LENGTH ints) and the arena's bytes with
    that length patched to 2^28."""
    with shmarena.build() as b:
        b.put("v", [7] * LENGTH)
    arena = b.arena
    closing(arena)
    assert arena.trusts("v")
    handle = arena.__reduce__()[1][0]
    path = tmp_path / "genuine.arena"
    arena.save(path)
    image = bytearray(path.read_bytes())
    needle = LENGTH.to_bytes(4, "little")
    assert image.count(needle) == 1, "the list's length occurs once"
    at = image.index(needle)
    image[at : at + 4] = (1 << 28).to_bytes(4, "little")
    return handle, bytes(image)


FORGE = """
import fcntl, os, sys
import shmarena

handle, image, opt_in = {handle!r}, open({image!r}, "rb").read(), {opt_in!r}
if opt_in:
    shmarena.trust_pickled_rows()
# A crafted sealed memfd holding the patched bytes, by Python code only.
fd = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
os.write(fd, image)
fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
ino = os.fstat(fd).st_ino
# The genuine handle, pointed at it: locator memfd:PID:FD, the token's inode replaced; the
# build identity and rows stay the genuine pickle's.
locator = f"memfd:{{os.getpid()}}:{{fd}}".encode()
rest = handle[19 + handle[18]:]
forged = handle[:17] + bytes([3, len(locator)]) + locator + rest
p = 19 + len(locator)
p += 1 + forged[p]
start = p + 1
forged = forged[:start + 16] + ino.to_bytes(8, "little") + forged[start + 24:]
try:
    a = shmarena._restore(forged)
    print("trusts", a.trusts("v"), flush=True)
    v = a["v"]
    print("read", len(v), sum(v[i] for i in range(0, len(v), 4096)))
except shmarena.ShmarenaError as e:
    print("error", type(e).__name__, e)
"""


def _run(handle: bytes, image_path, opt_in: bool) -> subprocess.CompletedProcess[str]:
    code = FORGE.format(handle=handle, image=str(image_path), opt_in=opt_in)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_forged_pickle_token_is_validated_without_opt_in(tmp_path, closing):
    handle, image = _genuine(tmp_path, closing)
    image_path = tmp_path / "forged.arena"
    image_path.write_bytes(image)
    out = _run(handle, image_path, opt_in=False)
    assert out.returncode == 0, f"the forgery crashed the reader: {out.returncode}\n{out.stderr}"
    # Refused as damage: the typed corruption error (a ShmarenaError).
    assert out.stdout.startswith("trusts False\nerror CorruptedError"), out.stdout + out.stderr


def _restore_in_child(handle: bytes, opt_in: bool) -> str:
    code = textwrap.dedent(
        f"""
        import shmarena
        if {opt_in!r}:
            shmarena.trust_pickled_rows()
        a = shmarena._restore({handle!r})
        trusted = a.trusts("v")
        v = a["v"]
        print(trusted, len(v), v[{LENGTH - 1}])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_genuine_pickle_is_trusted_only_after_opt_in(closing):
    """Without the opt-in a genuine pickle's entry is validated on first read; with it, the
    rows are taken and the read is O(1)."""
    with shmarena.build() as b:
        b.put("v", [7] * LENGTH)
    arena = b.arena
    closing(arena)
    handle = arena.__reduce__()[1][0]
    assert _token_span(handle)[1] > _token_span(handle)[0]
    assert _restore_in_child(handle, opt_in=False) == f"False {LENGTH} 7"
    assert _restore_in_child(handle, opt_in=True) == f"True {LENGTH} 7"


def test_trust_pickled_rows_is_exported():
    assert "trust_pickled_rows" in shmarena.__all__
    assert callable(shmarena.trust_pickled_rows)


def test_connect_takes_the_publishers_rows_only_when_trusted(closing):
    """The service's opt-in, in another process: `connect(name)` validates each entry on first
    read; `connect(name, trusted=True)` and `subscribe(name, trusted=True)` take the
    publisher's trust rows."""
    import os

    with shmarena.build() as b:
        b.put("v", [7] * LENGTH)
    arena = b.arena
    closing(arena)
    with arena.publish(f"trust-py-{os.getpid()}") as pub:

        def child(body: str) -> list[str]:
            code = f"import shmarena\nname = {pub.name!r}\n" + textwrap.dedent(body)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            return out.stdout.split()

        # Each in a fresh interpreter: a process keeps one arena object per arena id.
        assert child(
            f"""
            plain = shmarena.connect(name)
            before = plain.trusts("v")
            print(before, plain["v"][{LENGTH - 1}], plain.trusts("v"))
            """
        ) == ["False", "7", "True"]
        assert child(
            """
            print(shmarena.connect(name, trusted=True).trusts("v"))
            """
        ) == ["True"]
        assert child(
            """
            print(shmarena.subscribe(name, trusted=True).current().trusts("v"))
            """
        ) == ["True"]

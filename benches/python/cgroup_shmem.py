"""Which memory cgroup pays for an arena's pages: measured with two real cgroups.

A builder process in cgroup A builds a memfd arena and publishes it; a reader process in cgroup
B connects and reads every page; then the builder exits while the reader still maps the arena.
After each step the script prints each cgroup's charge (usage, and its `shmem` and anonymous
figures from memory.stat). A last step has the reader of B `shmarena.open` a *named* arena
(copied into the reader's own memfd by default) to show what a copy costs.

Needs root and a memory cgroup: cgroup v2 (`memory.max`) if the memory controller is on the
unified hierarchy, else cgroup v1 (`memory.limit_in_bytes`). The cgroups are made inside the
one this script runs in, so every limit above it still applies, and removed at the end.

    python benches/python/cgroup_shmem.py [MiB]      # default 200
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

import numpy as np

import shmarena


def find_memory_cgroup() -> tuple[str, str]:
    """(version, directory of this process's memory cgroup)."""
    with open("/proc/self/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            for root in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
                if os.path.exists(f"{root}{path}/memory.limit_in_bytes"):
                    return "v1", f"{root}{path}"
    for hid, _, path in lines:
        if hid == "0":
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                d = f"{root}{path}"
                try:
                    if "memory" in open(f"{root}/cgroup.controllers").read().split():
                        return "v2", d
                except OSError:
                    pass
    raise SystemExit("no memory cgroup controller available to this process")


class Cgroup:
    def __init__(self, version: str, parent: str, name: str, limit: int):
        self.version, self.dir = version, os.path.join(parent, name)
        if version == "v2":
            # A v2 cgroup with processes cannot have children with controllers; use a leaf.
            raise SystemExit("cgroup v2: run this from a cgroup without processes of its own")
        os.mkdir(self.dir)
        self.write("memory.limit_in_bytes", str(limit))

    def write(self, what: str, value: str) -> None:
        with open(os.path.join(self.dir, what), "w") as f:
            f.write(value)

    def add(self, pid: int) -> None:
        self.write("cgroup.procs", str(pid))

    def figures(self) -> dict[str, int]:
        stat = dict(line.split() for line in open(os.path.join(self.dir, "memory.stat")))
        usage = int(open(os.path.join(self.dir, "memory.usage_in_bytes")).read())
        return {"usage": usage, "shmem": int(stat.get("shmem", 0)), "anon": int(stat.get("rss", 0))}

    def remove(self) -> None:
        for _ in range(50):
            try:
                os.rmdir(self.dir)
                return
            except OSError:
                time.sleep(0.1)
        print(f"could not remove {self.dir}", file=sys.stderr)


def builder(conn, name: str, nbytes: int) -> None:
    conn.recv()  # moved into its cgroup
    with shmarena.build() as b:
        b.put_array("x", np.ones(nbytes // 8))
    pub = b.arena.publish(name)
    conn.send("published")
    conn.recv()  # until told to exit
    pub.close()


def reader(conn, name: str) -> None:
    conn.recv()
    arena = shmarena.connect(name)
    total = float(arena["x"].sum())  # every page
    conn.send(("read", total))
    msg = conn.recv()
    if msg == "open-named":
        seg = conn.recv()
        copy = shmarena.open(name=seg)  # default: copied into this process's own memfd
        conn.send(("copied", float(copy["x"].sum())))
        conn.recv()
    arena = None


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    nbytes = mib * 2**20
    version, here = find_memory_cgroup()
    print(f"memory cgroup {version}, parent {here}; arena of {mib} MiB")
    tag = f"shmarena-measure-{os.getpid()}"
    a = Cgroup(version, here, f"{tag}-A", 4 * nbytes)
    b = Cgroup(version, here, f"{tag}-B", nbytes // 2)  # limit: half the arena
    ctx = mp.get_context("spawn")
    pub_name = f"cg-{os.getpid()}"
    (pa, ca), (pb, cb) = ctx.Pipe(), ctx.Pipe()
    pw = ctx.Process(target=builder, args=(ca, pub_name, nbytes))
    rw = ctx.Process(target=reader, args=(cb, pub_name))
    pw.start()
    rw.start()
    time.sleep(1.0)  # both interpreters started (their own memory is charged to this cgroup)
    a.add(pw.pid)
    b.add(rw.pid)

    def show(step: str) -> None:
        for cg, label in ((a, "A (builder)"), (b, f"B (reader, limit {nbytes // 2 // 2**20} MiB)")):
            f = cg.figures()
            print(f"  {step:<38} {label:<32} usage {f['usage'] / 2**20:7.1f} MiB  "
                  f"shmem {f['shmem'] / 2**20:7.1f}  anon {f['anon'] / 2**20:6.1f}")

    try:
        show("start")
        pa.send("go")
        assert pa.recv() == "published"
        show("A built and published")
        pb.send("go")
        print("  reader:", pb.recv())
        show("B read every page")
        pa.send("exit")
        pw.join(30)
        show("A exited, B still maps it")
        with shmarena.build(name=f"cgn-{os.getpid()}") as nb:
            nb.put_array("x", np.ones(nbytes // 4 // 8))
        pb.send("open-named")
        pb.send(f"cgn-{os.getpid()}")
        print("  reader:", pb.recv() if rw.is_alive() else "died")
        show(f"B copied a {mib // 4} MiB named arena")
        nb.arena.close()
        pb.send("exit")
        rw.join(30)
        print(f"  reader exit code: {rw.exitcode} (-9: killed by the OOM killer)")
        show("B's reader exited")
    finally:
        for p in (pw, rw):
            if p.is_alive():
                p.kill()
                p.join()
        time.sleep(0.5)
        a.remove()
        b.remove()


if __name__ == "__main__":
    main()

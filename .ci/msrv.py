#!/usr/bin/env python3
"""MSRV check: the Rust version the README promises, held against the code and its dependencies.

The CI machine has one toolchain and cannot fetch another, so this does not compile with the
minimum version. It checks what can be checked without it:
  1. the workspace's `rust-version` (which clippy's `incompatible_msrv` lint holds the code's
     standard-library calls to, under `-D warnings`) is the version README.md promises;
  2. every crate of Cargo.lock that the workspace builds on this platform declares a `rust-version` no newer than it.
Language features newer than the MSRV are not caught here; docs/DESIGN.md says so.
Usage: python3 .ci/msrv.py   (from the repository root; runs `cargo metadata`)
"""
import json
import re
import subprocess
import sys


def version_tuple(text):
    return tuple(int(part) for part in text.split("."))[:3] + (0,) * (3 - len(text.split(".")))


def host_triple():
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    return re.search(r"^host: (\S+)$", out, re.M).group(1)


def built_packages(meta):
    """The packages the workspace builds on this platform with the features it uses, as
    `cargo tree` resolves them (`cargo metadata`'s resolve also lists optional dependencies no
    feature turns on)."""
    tree = subprocess.run(
        ["cargo", "tree", "--workspace", "--locked", "--edges", "normal,build,dev", "--prefix", "none",
         "--format", "{p}", "--target", host_triple()],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    built = set()
    for line in tree.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            built.add((fields[0], fields[1].lstrip("v")))
    return [package for package in meta["packages"] if (package["name"], package["version"]) in built]


def main():
    readme = open("README.md", encoding="utf-8").read()
    promised = re.search(r"Rust toolchain \((\d+\.\d+)\+\)", readme)
    if not promised:
        sys.exit("msrv: README.md does not state the Rust version it needs as 'Rust toolchain (X.Y+)'")
    msrv = promised.group(1)
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host_triple()],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = set(meta["workspace_members"])
    problems = []
    packages = built_packages(meta)
    for package in packages:
        declared = package.get("rust_version")
        if package["id"] in members:
            if declared != msrv:
                problems.append(
                    f"workspace crate {package['name']} declares rust-version {declared}, README promises {msrv}"
                )
        elif declared and version_tuple(declared) > version_tuple(msrv):
            problems.append(
                f"dependency {package['name']} {package['version']} needs Rust {declared}, above the MSRV {msrv}"
            )
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"msrv: README promises Rust {msrv}; the workspace and all {len(packages)} crates it builds agree")


if __name__ == "__main__":
    main()

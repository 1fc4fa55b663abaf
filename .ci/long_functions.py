#!/usr/bin/env python3
"""No function in the workspace's crates over LIMIT lines without a reason stated beside it.

Scans crates/*/src and benches/src (examples, tests and benches are left alone). A function
longer than LIMIT lines, from its signature to its closing brace, passes only with a comment
`// long: <why>` among the lines just above its signature (its docs and attributes), or while it
is listed in PENDING (with the work that splits it). Prints every long function; exits 1 if one
has no reason. Run from anywhere: `python3 .ci/long_functions.py`.
"""
import os
import re
import sys

LIMIT = 120
ROOTS = ["crates", "benches/src"]
# Functions known to be long, each with the work that will split it; remove a line when it lands.
PENDING = {
    ("crates/shmarena/src/format.rs", "parse_entry"): "to split: one check a function (issue 25)",
}

FN = re.compile(
    r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+"[^"]*"\s+)?fn\s+(\w+)'
)
CHAR = re.compile(r"'(\\.|[^\\'])'")


def code_of(lines):
    """Each line without its comment and the insides of string and char literals (roughly)."""
    in_str = False
    out = []
    for line in lines:
        kept = []
        i = 0
        while i < len(line):
            c = line[i]
            if in_str:
                if c == "\\":
                    i += 2
                    continue
                if c == '"':
                    in_str = False
                i += 1
                continue
            if line.startswith("//", i):
                break
            if c == '"':
                in_str = True
                i += 1
                continue
            m = CHAR.match(line, i)
            if c == "'" and m:
                i = m.end()
                continue
            kept.append(c)
            i += 1
        out.append("".join(kept))
    return out


def long_functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    code = code_of(lines)
    for n, line in enumerate(code):
        m = FN.match(line)
        if not m:
            continue
        depth, started = 0, False
        for k in range(n, len(code)):
            for ch in code[k]:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not started:
                    break  # a declaration without a body
            else:
                if started and depth == 0:
                    if k - n + 1 > LIMIT:
                        yield m.group(1), n, k - n + 1, reason_above(lines, n)
                    break
                continue
            break


def reason_above(lines, n):
    """The text of a `// long:` comment among the doc, attribute and comment lines above line n."""
    k = n - 1
    while k >= 0 and lines[k].strip().startswith(("//", "#[")):
        text = lines[k].strip()
        if text.startswith("// long:"):
            return text[len("// long:"):].strip()
        k -= 1
    return None


def main():
    top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    os.chdir(top)
    files = []
    for root in ROOTS:
        for d, _, names in os.walk(root):
            parts = d.split(os.sep)
            if "target" in parts or not ("src" in parts):
                continue
            files += [os.path.join(d, f) for f in names if f.endswith(".rs")]
    bad, seen = 0, set()
    for path in sorted(files):
        for name, line, length, reason in long_functions(path):
            seen.add((path, name))
            why = reason or PENDING.get((path, name))
            print(f"{length:5} lines  {path}:{line + 1} {name}: {why or 'NO REASON GIVEN'}")
            bad += why is None
    for key in PENDING:
        if key not in seen:
            print(f"note: {key[0]} {key[1]} is no longer over {LIMIT} lines: remove it from PENDING")
    if bad:
        print(f"{bad} function(s) over {LIMIT} lines without a reason: split them, or say why with "
              "a `// long: <why>` comment above the signature")
        return 1
    print(f"ok: no function over {LIMIT} lines without a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())

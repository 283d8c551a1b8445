#!/usr/bin/env python3
"""Folds `perf script` output (stdin) into one line per distinct stack, root first, with its
sample count: the input of flame-graph tools (`inferno-flamegraph`, `flamegraph.pl`). Frames
are function names with Rust hashes and arguments left out; `[unknown]` frames are dropped.

    perf script -i perf.data | scripts/stackcollapse-perf.py > out.folded
"""
import re
import sys
from collections import Counter

HASH = re.compile(r"::h[0-9a-f]{16}$")


def frame(line: str) -> str | None:
    # "    55d0c1a2b3c4 sluice::core::handle+0x1f (/path/to/sluice)"
    parts = line.strip().split(maxsplit=1)
    if len(parts) < 2:
        return None
    sym = parts[1].rsplit(" (", 1)[0]
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    sym = HASH.sub("", sym)
    if sym == "[unknown]":
        return None
    return sym.replace(";", ":")


def main() -> None:
    stacks: Counter[str] = Counter()
    frames: list[str] = []
    thread = ""
    for line in sys.stdin:
        if not line.strip():
            if frames or thread:
                stacks[";".join([thread, *reversed(frames)])] += 1
            frames, thread = [], ""
            continue
        if not line.startswith((" ", "\t")):
            thread = line.split()[0]  # the command (thread name) of the sample
            continue
        f = frame(line)
        if f:
            frames.append(f)
    if frames or thread:
        stacks[";".join([thread, *reversed(frames)])] += 1
    for stack, n in stacks.most_common():
        print(f"{stack} {n}")


if __name__ == "__main__":
    main()

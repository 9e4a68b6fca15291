"""The kill rate of `make mutate` per file, and the surviving mutants: reads `mutmut results
--all true` (run after `mutmut run`). Usage: python bench/mutation.py [mutant-name globs]."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

BIN = Path(sys.executable).parent


def main(patterns: list[str]) -> None:
    out = subprocess.run(
        [str(BIN / "mutmut"), "results", "--all", "true"], capture_output=True, text=True
    ).stdout
    by_file: dict[str, Counter] = defaultdict(Counter)
    survivors: list[str] = []
    for name, status in re.findall(r"^\s*([\w.]+__mutmut_\d+): (.+)$", out, re.M):
        if patterns and not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        module = name.rsplit(".", 1)[0]
        status = status.strip()
        by_file[module][status] += 1
        if status == "survived":
            survivors.append(name)
    print(f"{'module':40s} {'mutants':>8s} {'killed':>7s} {'kill rate':>9s}  other")
    total = Counter()
    for module in sorted(by_file):
        c = by_file[module]
        total.update(c)
        n, killed = sum(c.values()), c["killed"]
        other = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "killed")
        print(f"{module:40s} {n:8d} {killed:7d} {killed / n:9.1%}  {other}")
    n = sum(total.values())
    if n:
        print(f"{'all':40s} {n:8d} {total['killed']:7d} {total['killed'] / n:9.1%}")
    print(f"\n{len(survivors)} survivors (see one with `mutmut show NAME`):")
    for name in survivors:
        print(" ", name)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Compare two builds' results folders (``book/chapters/results/*.json``) leaf by leaf.

    python benchmarks/compare_results.py A/results B/results

For each file: the number of leaves, how many differ (exact comparison), which exist on one side only, and the
largest absolute difference between numeric leaves (and its place); a few differing leaves are printed. Exit
status 0 when every leaf is equal and no file or leaf is missing on either side, 1 otherwise.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def leaves(x, path=""):
    """``(path, value)`` for every leaf of a JSON value, in document order."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(a: Path, b: Path, show: int = 6) -> bool:
    same = True
    for fa in sorted(a.glob("*.json")):
        fb = b / fa.name
        if not fb.exists():
            print(f"{fa.name}: missing in {b}")
            same = False
            continue
        la, lb = dict(leaves(json.loads(fa.read_text()))), dict(leaves(json.loads(fb.read_text())))
        differ = [k for k in la if k in lb and la[k] != lb[k] and not (la[k] != la[k] and lb[k] != lb[k])]
        only_a, only_b = [k for k in la if k not in lb], [k for k in lb if k not in la]
        gaps = [(abs(la[k] - lb[k]), k) for k in differ if _number(la[k]) and _number(lb[k])
                and math.isfinite(la[k]) and math.isfinite(lb[k])]
        worst = max(gaps) if gaps else None
        print(f"{fa.name}: {len(la)} / {len(lb)} leaves, {len(differ)} differ, {len(only_a)} only in A, "
              f"{len(only_b)} only in B" + (f", largest |difference| {worst[0]:.3g} at {worst[1]}" if worst else ""))
        for k in differ[:show]:
            print(f"   differ: {k}  {la[k]!r:.40}  {lb[k]!r:.40}")
        for k in only_a[:show]:
            print(f"   only in A: {k}")
        for k in only_b[:show]:
            print(f"   only in B: {k}")
        same &= not (differ or only_a or only_b)
    for fb in sorted(b.glob("*.json")):
        if not (a / fb.name).exists():
            print(f"{fb.name}: only in {b}")
            same = False
    return same


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/compare_results.py A/results B/results")
    sys.exit(0 if compare(Path(sys.argv[1]), Path(sys.argv[2])) else 1)

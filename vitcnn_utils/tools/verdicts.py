"""Print the verdict of every finding from recorded results, or compare two builds' verdicts.

    python -m vitcnn_utils.tools.verdicts book/chapters/results
    python -m vitcnn_utils.tools.verdicts book/chapters/results /tmp/draws100/results   # e.g. another draw set

One line per finding: its verdict and the central criterion's interval (``--all``: every criterion). With two
folders, a last column says whether the verdicts agree; the command exits with status 1 when any differs (the
stability check of the evidence issue: verdicts judged on disjoint draw sets must not flip).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import findings


def rows(folder: str | Path) -> list[dict]:
    """:func:`vitcnn_utils.findings.table` of the results recorded in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such results folder (a build writes book/chapters/results)")
    return findings.table(findings.load_results(folder))


def _criteria(row: dict, every: bool) -> str:
    shown = [(kind, rule, state, value) for kind, rule, state, value, _ in row["checks"]
             if every or kind == "central"]
    return "; ".join(f"{kind}: {state} ({value})" if every else f"{state} ({value})"
                     for kind, rule, state, value in shown) or "–"


def compare(first: list[dict], second: list[dict] | None = None, every: bool = False) -> tuple[list[str], int]:
    """Text lines (one per finding) and the number of findings whose verdicts differ between the builds."""
    lines, differ = [], 0
    for i, a in enumerate(first):
        line = f"F{a['finding']:<3} {a['verdict']:<28} {_criteria(a, every)}"
        if second is not None:
            b = second[i]
            same = a["verdict"] == b["verdict"]
            differ += not same
            line += f"\n     {b['verdict']:<28} {_criteria(b, every)}  -> {'same' if same else 'DIFFERS'}"
        lines.append(line)
    return lines, differ


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a results folder (book/chapters/results of a build)")
    parser.add_argument("other", nargs="?", help="a second results folder to compare with")
    parser.add_argument("--all", action="store_true", help="every criterion, not only the central one")
    args = parser.parse_args(argv)
    lines, differ = compare(rows(args.results), rows(args.other) if args.other else None, args.all)
    print("\n".join(lines))
    if args.other:
        print(f"{len(lines) - differ} of {len(lines)} verdicts agree")
        raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()

"""Where a chapter's measuring time goes: its ``run`` with the default (zoo) models, ``use_cache=False`` and one
draw (or ``--n-draws N``), under cProfile, without the seed-twin rerun (the same calls on other weights).

Prints the wall and CPU time, the operations with the most time in their own frame (torch's kernels are
called from Python, so a matrix product or a linear layer shows as one row), and the library's functions by
cumulative time. Run it with one thread to see what a chapter costs in the book's ``--jobs 2`` build:

    OMP_NUM_THREADS=1 python benchmarks/profile_chapter.py data_scale [--n-draws 1] [--top 15]
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import time

from vitcnn_utils.tools.book import MEASURING


def _name(func: tuple[str, int, str]) -> str:
    file, line, name = func
    if file == "~":                                    # a built-in: torch kernels and tensor methods
        return name
    module = file.split("vitcnn_utils/")[-1] if "vitcnn_utils/" in file else file.rsplit("/", 1)[-1]
    return f"{module}:{line}({name})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", choices=MEASURING)
    parser.add_argument("--n-draws", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    module = importlib.import_module(f"vitcnn_utils.chapters.{args.chapter}")
    run_arguments = {**module.Params().run_arguments(), "n_draws": args.n_draws, "use_cache": False}

    profiler = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    profiler.runcall(module.run, **run_arguments)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{args.chapter}, {args.n_draws} draw(s), first training seed: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(under cProfile)")

    stats = pstats.Stats(profiler).stats             # {func: (calls, primitive calls, tottime, cumtime, callers)}
    total = sum(row[2] for row in stats.values())
    print(f"\nmost time in their own frame (of {total:.1f} s profiled):")
    for func, row in sorted(stats.items(), key=lambda kv: -kv[1][2])[:args.top]:
        print(f"  {row[2]:8.1f} s {100 * row[2] / total:5.1f}%  {row[0]:>7} calls  {_name(func)}")
    print("\nthe library's functions by cumulative time:")
    library = [(func, row) for func, row in stats.items() if "vitcnn_utils/" in func[0]
               and "/chapters/" not in func[0]]
    for func, row in sorted(library, key=lambda kv: -kv[1][3])[:args.top]:
        print(f"  {row[3]:8.1f} s {100 * row[3] / total:5.1f}%  {row[0]:>7} calls  {_name(func)}")


if __name__ == "__main__":
    main()

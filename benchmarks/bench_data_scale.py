"""Data-scale chapter benchmark: ``data_scale.run`` with its default (zoo) models and ``use_cache=False``, then
its seed-twin rerun in the same process (``seeds.replicate``, as the notebook does), timed (wall and CPU).

``--out FILE`` saves both results' ``cka`` and ``probe`` tensors and the times; ``--compare A B`` checks two such
files tensor by tensor with ``torch.equal`` (e.g. before and after a change: run the script once from each
checkout, with ``PYTHONPATH`` pointing at it) and prints their times.

    python benchmarks/bench_data_scale.py [--n-draws 1] [--out FILE]
    python benchmarks/bench_data_scale.py --compare A.pt B.pt
"""
from __future__ import annotations

import argparse
import time

import torch


def measure(n_draws: int) -> dict:
    from vitcnn_utils import seeds
    from vitcnn_utils.chapters import data_scale
    args = {**data_scale.Params().run_arguments(), "n_draws": n_draws, "use_cache": False}
    t0, c0 = time.perf_counter(), time.process_time()
    first = data_scale.run(**args)
    t1, c1 = time.perf_counter(), time.process_time()
    print(f"first run: {t1 - t0:.1f} s wall, {c1 - c0:.1f} s CPU", flush=True)
    twins = seeds.replicate(data_scale.run, args, data_scale.MODEL_ARGUMENTS)
    t2, c2 = time.perf_counter(), time.process_time()
    print(f"seed-twin rerun: {t2 - t1:.1f} s wall, {c2 - c1:.1f} s CPU" + ("" if twins else " (no twins trained)"))
    out = {"first": {"cka": first.cka, "probe": first.probe}, "wall": (t1 - t0, t2 - t1), "cpu": (c1 - c0, c2 - c1)}
    if twins:
        out["twin"] = {"cka": twins[0].cka, "probe": twins[0].probe}
    return out


def compare(a: dict, b: dict) -> int:
    """Tensors compared; prints each that differs and returns how many do."""
    counts = [0, 0]

    def walk(x, y, path):
        if isinstance(x, torch.Tensor):
            counts[0] += 1
            if not torch.equal(x, y):
                counts[1] += 1
                print("differs:", path)
            return
        if set(x) != set(y):
            raise ValueError(f"{path}: different keys {sorted(set(x) ^ set(y))}")
        for k in x:
            walk(x[k], y[k], f"{path}/{k}")

    for run in ("first", "twin"):
        if run in a and run in b:
            for part in ("cka", "probe"):
                walk(a[run][part], b[run][part], f"{run}/{part}")
    print(f"{counts[0]} tensors compared with torch.equal, {counts[1]} differ")
    for name, r in (("A", a), ("B", b)):
        print(f"{name}: first run {r['wall'][0]:.1f} s wall / {r['cpu'][0]:.1f} s CPU, seed-twin rerun "
              f"{r['wall'][1]:.1f} s wall / {r['cpu'][1]:.1f} s CPU")
    return counts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-draws", type=int, default=1)
    parser.add_argument("--out", help="save the results and times here")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two saved runs")
    args = parser.parse_args()
    if args.compare:
        a, b = (torch.load(path, weights_only=False) for path in args.compare)
        raise SystemExit(1 if compare(a, b) else 0)
    print(f"threads: {torch.get_num_threads()}")
    result = measure(args.n_draws)
    if args.out:
        torch.save(result, args.out)


if __name__ == "__main__":
    main()

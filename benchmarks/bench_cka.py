"""CKA benchmark: within-A, within-B and A×B heatmaps of two 12-block toy ViTs.

Reports in one run: forward-only time, the CKA overhead of vitcnn_utils.cka.MinibatchCKA, the speed-up over a
straightforward per-pair loop (two Gram matrices recomputed for every layer pair, as peer libraries do;
timed on a random sample of pairs and extrapolated to all of them), and the maximum error of every heatmap
entry against a float64 NumPy reference (Song et al.'s formula, per pair, summed over minibatches).

    python benchmarks/bench_cka.py [--examples 2048] [--batch 256] [--loop-pairs 60]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from vitcnn_utils.cka import MinibatchCKA, split_heatmap
from vitcnn_utils.hooks import Capture, default_layers
from vitcnn_utils.models import build_vit


def toy_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_vit(embed_dim=64, depth=12, num_heads=4, mlp_ratio=2.0).eval()


def per_pair_loop_hsic(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """The straightforward way: Grams and unbiased HSIC recomputed for this one pair (float64)."""
    def u_gram(z):
        z = z.reshape(len(z), -1).double()
        k = z @ z.T
        n = len(k)
        k.fill_diagonal_(0)
        means = k.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k = k - means[:, None] - means[None, :]
        return k.fill_diagonal_(0)
    k, l = u_gram(x), u_gram(y)
    n = len(k)
    return ((k * l).sum() / (n * (n - 3))).item(), ((k * k).sum() / (n * (n - 3))).item(), \
        ((l * l).sum() / (n * (n - 3))).item()


def reference_heatmap(batches: list[list[np.ndarray]]) -> np.ndarray:
    """float64 NumPy: Song et al.'s unbiased HSIC (explicit formula) for all layer pairs, summed over batches."""
    n_layers = len(batches[0])
    xy = np.zeros((n_layers, n_layers))
    for feats in batches:
        n = len(feats[0])
        grams = []
        for f in feats:
            f = f.reshape(n, -1).astype(np.float64)
            f = f - f[:1]                     # exact offset invariance; keeps the explicit formula accurate
            k = f @ f.T
            np.fill_diagonal(k, 0.0)
            grams.append(k)
        flat = np.stack([k.ravel() for k in grams])            # tr(K L) = <K, L> for symmetric K, L
        sums = np.array([k.sum() for k in grams])
        rows = np.stack([k.sum(1) for k in grams])              # K 1
        xy += (flat @ flat.T + np.outer(sums, sums) / ((n - 1) * (n - 2))
               - 2.0 / (n - 2) * rows @ rows.T) / (n * (n - 3))
    d = np.sqrt(np.diag(xy))
    return xy / np.outer(d, d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loop-pairs", type=int, default=60, help="pairs timed for the per-pair loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model_a, model_b = toy_model(0).to(device), toy_model(1).to(device)
    layers_a, layers_b = default_layers(model_a), default_layers(model_b)
    images = torch.randn(args.examples, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batches = images.split(args.batch)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # 1. forward only (with the capture hooks, which every method needs)
    feats = []
    with Capture(model_a, layers_a) as cap_a, Capture(model_b, layers_b) as cap_b, torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        for x in batches:
            x = x.to(device)
            feats.append((list(cap_a(x).values()), list(cap_b(x).values())))
        sync()
        t_forward = time.perf_counter() - t0

        # 2. MinibatchCKA: within-A, within-B and A×B from one update per minibatch
        t0 = time.perf_counter()
        cka = MinibatchCKA()
        for fa, fb in feats:
            cka.update(fa + fb)
        heatmap = cka.compute()
        sync()
        t_cka = time.perf_counter() - t0
    aa, bb, ab = split_heatmap(heatmap, len(layers_a))
    n_a, n_b = len(layers_a), len(layers_b)
    n_pairs = n_a * n_a + n_b * n_b + n_a * n_b                   # the three heatmaps, as a loop computes them

    # 3. the straightforward per-pair loop, timed on a sample of pairs
    all_feats = [fa + fb for fa, fb in feats]
    rng = np.random.default_rng(0)
    sample = [(int(i), int(j)) for i, j in rng.integers(0, n_a + n_b, size=(args.loop_pairs, 2))]
    t0 = time.perf_counter()
    loop_values = []
    for i, j in sample:
        sums = np.zeros(3)
        for batch in all_feats:
            sums += per_pair_loop_hsic(batch[i], batch[j])
        loop_values.append(sums[0] / np.sqrt(sums[1] * sums[2]))
    sync()
    t_loop = (time.perf_counter() - t0) / len(sample) * n_pairs

    # 4. float64 reference for every entry
    t0 = time.perf_counter()
    reference = reference_heatmap([[f.cpu().numpy() for f in batch] for batch in all_feats])
    t_ref = time.perf_counter() - t0
    err = np.abs(heatmap.numpy() - reference).max()
    loop_err = max(abs(v - reference[i, j]) for v, (i, j) in zip(loop_values, sample))

    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu}, {torch.get_num_threads()} threads"
    print(f"CKA benchmark on {where} (torch {torch.__version__})")
    print(f"  two 12-block toy ViTs (width 64, 50 tokens), {n_a} + {n_b} layers, {args.examples} examples "
          f"in batches of {args.batch}; heatmaps {tuple(aa.shape)}, {tuple(bb.shape)}, {tuple(ab.shape)}")
    print(f"  forward only (both models, hooks on):   {t_forward:8.2f} s")
    print(f"  MinibatchCKA, all three heatmaps:       {t_cka:8.2f} s  ({t_cka / t_forward:.1f}× the forward time)")
    print(f"  per-pair loop, {n_pairs} pairs (timed on {len(sample)}): {t_loop:8.1f} s  "
          f"-> MinibatchCKA is {t_loop / t_cka:.0f}× faster")
    print(f"  max |error| vs float64 NumPy reference over all {heatmap.numel()} entries: {err:.1e} "
          f"(per-pair loop: {loop_err:.1e}; reference took {t_ref:.1f} s)")


if __name__ == "__main__":
    main()

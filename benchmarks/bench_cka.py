"""CKA benchmark: within-A, within-B and A×B heatmaps of two 12-block toy ViTs.

Reports in one run: forward-only time, the CKA overhead of vitcnn_utils.cka.MinibatchCKA (float64 and float32
Gram products), the speed-up over a straightforward per-pair loop (two Gram matrices recomputed for every layer
pair; timed on a random sample of pairs and extrapolated to all of them), the peer library pytorch-cka on the same
models, layers and images (end to end: its three compute_cka calls against our forward + MinibatchCKA, and
against measure.model_heatmaps, which computes each layer's Gram inside the forward hook), and the
maximum error of every heatmap entry against a float64 NumPy reference (Song et al.'s formula, per pair, summed
over minibatches).

pytorch-cka is never a dependency of this project: the script installs it with pip (no dependencies; it needs
only torch, numpy, tqdm and matplotlib, which are here) into a throw-away folder that is deleted afterwards
(``--no-peer`` skips it, e.g. offline).

    python benchmarks/bench_cka.py [--examples 2048] [--batch 256] [--loop-pairs 60] [--no-peer]
"""
from __future__ import annotations

import argparse
import importlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from vitcnn_utils.cka import MinibatchCKA, split_heatmap
from vitcnn_utils.measure import model_heatmaps
from vitcnn_utils.data import normalize
from vitcnn_utils.hooks import Capture, default_layers
from vitcnn_utils.architectures import build_vit


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


PEER = "pytorch-cka==1.1.3"


def run_peer(model_a, model_b, layers_a, layers_b, batches, device, sync):
    """pytorch-cka's within-A, within-B and A×B heatmaps (its ``compute_cka``: one forward per model and
    call, Grams and HSIC in float32, result clamped to [0, 1]) and their wall time; installed into a
    throw-away folder for this call only."""
    with tempfile.TemporaryDirectory(prefix="peer-cka-") as folder:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", folder, PEER],
                       check=True)
        sys.path.insert(0, folder)
        try:
            peer = importlib.import_module("cka")
            sync()
            t0 = time.perf_counter()
            aa = peer.compute_cka(model_a, model_a, [list(batches)], layers=layers_a, device=device, progress=False)[0]
            bb = peer.compute_cka(model_b, model_b, [list(batches)], layers=layers_b, device=device, progress=False)[0]
            ab = peer.compute_cka(model_a, model_b, [list(batches)], layers=layers_a, model2_layers=layers_b,
                                  device=device, progress=False)[0]
            sync()
            seconds = time.perf_counter() - t0
        finally:
            sys.path.remove(folder)
            sys.modules.pop("cka", None)
            for name in [m for m in sys.modules if m.startswith("cka.")]:
                sys.modules.pop(name)
    return [m.double().cpu().numpy() for m in (aa, bb, ab)], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loop-pairs", type=int, default=60, help="pairs timed for the per-pair loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-peer", action="store_true", help="skip pytorch-cka (it is installed from PyPI)")
    args = parser.parse_args()
    device = torch.device(args.device)
    model_a, model_b = toy_model(0).to(device), toy_model(1).to(device)
    layers_a, layers_b = default_layers(model_a), default_layers(model_b)
    raw = torch.randint(0, 256, (args.examples, 1, 28, 28), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0))
    images = normalize(raw)                      # the model input every method sees
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
        t0 = time.perf_counter()
        cka32 = MinibatchCKA(gram_dtype=torch.float32)
        for fa, fb in feats:
            cka32.update(fa + fb)
        heatmap32 = cka32.compute()
        sync()
        t_cka32 = time.perf_counter() - t0
    # 2b. the library's own end-to-end path: model_heatmaps reduces every layer to its Gram inside the hook
    # (no feature copies kept), one forward per model and minibatch, float32 Gram products
    sync()
    t0 = time.perf_counter()
    fused = model_heatmaps({"a": model_a, "b": model_b}, [(x, None) for x in raw.split(args.batch)],
                           layers={"a": layers_a, "b": layers_b}, device=device, gram_dtype=torch.float32,
                           progress=False)
    sync()
    t_fused = time.perf_counter() - t0
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
    err32 = np.abs(heatmap32.numpy() - reference).max()
    err_fused = np.abs(fused.matrix.numpy() - reference).max()
    peer = None
    if not args.no_peer:
        peer_maps, t_peer = run_peer(model_a, model_b, layers_a, layers_b, batches, device, sync)
        peer_err = max(np.abs(m - r.numpy()).max() for m, r in zip(peer_maps, split_heatmap(torch.from_numpy(reference), n_a)))
        peer = (t_peer, peer_err)
    loop_err = max(abs(v - reference[i, j]) for v, (i, j) in zip(loop_values, sample))

    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu}, {torch.get_num_threads()} threads"
    print(f"CKA benchmark on {where} (torch {torch.__version__})")
    print(f"  two 12-block toy ViTs (width 64, 50 tokens), {n_a} + {n_b} layers, {args.examples} examples "
          f"in batches of {args.batch}; heatmaps {tuple(aa.shape)}, {tuple(bb.shape)}, {tuple(ab.shape)}")
    print(f"  forward only (both models, hooks on):   {t_forward:8.2f} s")
    print(f"  MinibatchCKA, all three heatmaps:       {t_cka:8.2f} s  ({t_cka / t_forward:.1f}× the forward time)")
    print(f"  MinibatchCKA, float32 Gram products:    {t_cka32:8.2f} s  ({t_cka32 / t_forward:.1f}× the forward time)")
    print(f"  per-pair loop, {n_pairs} pairs (timed on {len(sample)}): {t_loop:8.1f} s  "
          f"-> MinibatchCKA is {t_loop / t_cka:.0f}× faster")
    print(f"  max |error| vs float64 NumPy reference over all {heatmap.numel()} entries: {err:.1e} "
          f"(per-pair loop: {loop_err:.1e}; reference took {t_ref:.1f} s)")
    print(f"  max |error| with float32 Gram products: {err32:.1e}")
    print(f"  model_heatmaps end to end (Grams in the hooks, float32 Gram products): {t_fused:.2f} s, "
          f"max |error| {err_fused:.1e}")
    if peer:
        t_peer, peer_err = peer
        ours, ours32 = t_forward + t_cka, t_forward + t_cka32
        print(f"  end to end, within-A + within-B + A×B:  {PEER} {t_peer:.2f} s, max |error| {peer_err:.1e}; "
              f"vitcnn_utils {ours:.2f} s (captured features, float64 Grams), {ours32:.2f} s (float32 Gram products), "
              f"{t_fused:.2f} s (model_heatmaps) -> {t_peer / ours:.1f}× / {t_peer / ours32:.1f}× / "
              f"{t_peer / t_fused:.1f}× faster")


if __name__ == "__main__":
    main()

"""Throughput of the paper's heatmap workload: every default layer of ViT-B/16 against every default layer of
ResNet-50 (within each model and across) at 224 px, random-init weights (timing only).

Reports in one run: forward-only images/s (both models, no hooks), images/s of the whole heatmap computation
(:func:`vitcnn_utils.cka.model_heatmaps`: forward passes with hooks that reduce each layer to its Gram matrix,
U-centring, all-pairs HSIC), the CKA overhead as a fraction of the forward-only time, and on a GPU the peak
memory.

    python benchmarks/bench_paper_models.py [--images 64] [--batch 16] [--device cpu]
    python benchmarks/bench_paper_models.py --vit vit_large_patch16_224 --images 2048 --batch 1024 --amp bf16
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from vitcnn_utils.cka import model_heatmaps
from vitcnn_utils.heatmaps import AMP, GRAM
from vitcnn_utils.hooks import default_layers
from vitcnn_utils.models import load_model, preprocessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit", default="vit_base_patch16_224")
    parser.add_argument("--resnet", default="resnet50")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=sorted(AMP), default="none")
    parser.add_argument("--gram-dtype", choices=sorted(GRAM), default="float32")
    args = parser.parse_args()
    device = torch.device(args.device)
    models = {"ViT": load_model(args.vit, device=device), "ResNet": load_model(args.resnet, device=device)}
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, 224, 224, generator=gen)
    batches = [(images[i:i + args.batch], None) for i in range(0, args.images, args.batch)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward_only():
        with torch.inference_mode():
            for x, _ in batches:
                x = x.to(device)
                for model in models.values():
                    with torch.autocast(device.type, dtype=AMP[args.amp] or torch.float32,
                                        enabled=AMP[args.amp] is not None):
                        model(preprocessor(model)(x))

    with torch.inference_mode():                               # warm-up: one minibatch, both models
        for model in models.values():
            model(preprocessor(model)(batches[0][0].to(device)))
    sync()
    t0 = time.perf_counter()
    forward_only()
    sync()
    t_forward = time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    heatmaps = model_heatmaps(models, batches, device=device, gram_dtype=GRAM[args.gram_dtype],
                              amp_dtype=AMP[args.amp], progress=False)
    sync()
    t_all = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    n_v, n_r = (len(heatmaps.names[k]) for k in ("ViT", "ResNet"))
    assert (n_v, n_r) == (len(default_layers(models["ViT"])), len(default_layers(models["ResNet"])))
    print(f"heatmap throughput on {where} (torch {torch.__version__}); {args.vit} ({n_v} layers) x {args.resnet} "
          f"({n_r} layers), {args.images} images of 224 px in batches of {args.batch}, autocast {args.amp}, "
          f"Gram products {args.gram_dtype}")
    print(f"  forward only, both models:     {t_forward:8.2f} s  {args.images / t_forward:8.1f} images/s")
    print(f"  all three heatmaps:            {t_all:8.2f} s  {args.images / t_all:8.1f} images/s")
    print(f"  CKA overhead: {(t_all - t_forward) / t_forward:.0%} of the forward-only time"
          + (f"; peak GPU memory {peak:.1f} GiB" if peak is not None else ""))


if __name__ == "__main__":
    main()

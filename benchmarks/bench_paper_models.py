"""Throughput of the paper's heatmap workload: every default layer of ViT-B/16 against every default layer of
ResNet-50 (within each model and across) at 224 px, random-init weights (timing only).

Reports in one run: forward-only images/s (both models, no hooks), images/s of the whole heatmap computation
(:func:`vitcnn_utils.measure.model_heatmaps`: forward passes with hooks that reduce each layer to its Gram matrix,
U-centring, all-pairs HSIC), the CKA overhead as a fraction of the forward-only time, and on a GPU the peak
memory of each (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; the models' weights
are resident, so they are included). Both timed paths are warmed up first on one minibatch with the same
autocast, and the device is synchronised before every clock reading. The images are random ``uint8`` pixels
(what an image loader hands over), moved to the device per minibatch from pinned memory on a GPU.

    python benchmarks/bench_paper_models.py [--images 64] [--batch 16] [--device cpu]
    python benchmarks/bench_paper_models.py --images 4096 --batch 256 --amp bf16 --gram-dtype float32
    python benchmarks/bench_paper_models.py --vit vit_large_patch16_224 --images 2048 --batch 1024 --amp bf16

Run from the repository root with the package importable (``pip install -e .`` or ``PYTHONPATH=.``);
``--json FILE`` also writes the figures as JSON. :func:`measure` is what ``benchmarks/gpu_check.py`` calls.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import torch

from vitcnn_utils.measure import model_heatmaps
from vitcnn_utils.cka import GRAM_DTYPES as GRAM
from vitcnn_utils.runner import AMP_DTYPES as AMP
from vitcnn_utils.hooks import default_layers
from vitcnn_utils.data import preprocessor
from vitcnn_utils.models import load_model


def _where(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def measure(vit: str = "vit_base_patch16_224", resnet: str = "resnet50", images: int = 64, batch: int = 16,
            device: str | torch.device | None = None, amp: str = "none", gram_dtype: str = "float32",
            image_size: int = 224, seed: int = 0) -> dict:
    """Time forward-only and all-three-heatmaps passes of ``vit`` × ``resnet`` (timm names, random weights) over
    ``images`` random uint8 images of ``image_size`` px in minibatches of ``batch``; returns the figures."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    amp_dtype = AMP[amp]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                         # "random weights": intended here
        models = {"ViT": load_model(vit, device=device), "ResNet": load_model(resnet, device=device)}
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (images, 3, image_size, image_size), dtype=torch.uint8, generator=gen)
    if cuda:
        pixels = pixels.pin_memory()
    batches = [(pixels[i:i + batch], None) for i in range(0, images, batch)]
    prep = {label: preprocessor(model) for label, model in models.items()}

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def forward_only(some):
        with torch.inference_mode():
            for x, _ in some:
                x = x.to(device, non_blocking=True)
                for label, model in models.items():
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        model(prep[label](x))

    def heatmaps(some):
        with warnings.catch_warnings(record=True) as caught:   # random-init layers can be constant (NaN CKA)
            warnings.simplefilter("always")
            result = model_heatmaps(models, some, device=device, gram_dtype=GRAM[gram_dtype], amp_dtype=amp_dtype,
                                    progress=False)
        return result, len(caught)

    def peak_gib():
        return torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None

    forward_only(batches[:1])                                  # warm-up: kernels, allocator, autocast caches
    heatmaps(batches[:1])
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    forward_only(batches)
    sync()
    t_forward = time.perf_counter() - t0
    peak_forward = peak_gib()

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result, n_warnings = heatmaps(batches)
    sync()
    t_all = time.perf_counter() - t0
    peak_heatmaps = peak_gib()
    peak_reserved = torch.cuda.max_memory_reserved(device) / 2**30 if cuda else None

    n_v, n_r = (len(result.names[k]) for k in ("ViT", "ResNet"))
    assert (n_v, n_r) == (len(default_layers(models["ViT"])), len(default_layers(models["ResNet"])))
    matrix = result.matrix
    return {
        "where": _where(device), "device": str(device), "torch": torch.__version__,
        "vit": vit, "resnet": resnet, "vit_layers": n_v, "resnet_layers": n_r, "images": images, "batch": batch,
        "image_size": image_size, "amp": amp, "gram_dtype": gram_dtype, "n_images": result.n_images,
        "forward_seconds": t_forward, "forward_images_per_second": images / t_forward,
        "heatmaps_seconds": t_all, "heatmaps_images_per_second": images / t_all,
        "cka_overhead": (t_all - t_forward) / t_forward,
        "peak_forward_gib": peak_forward, "peak_heatmaps_gib": peak_heatmaps, "peak_reserved_gib": peak_reserved,
        "finite_fraction": torch.isfinite(matrix).double().mean().item(), "constant_layer_warnings": n_warnings,
    }


def report(r: dict) -> str:
    lines = [
        f"heatmap throughput on {r['where']} (torch {r['torch']}); {r['vit']} ({r['vit_layers']} layers) x "
        f"{r['resnet']} ({r['resnet_layers']} layers), {r['images']} images of {r['image_size']} px in batches of "
        f"{r['batch']}, autocast {r['amp']}, Gram products {r['gram_dtype']}",
        f"  forward only, both models:     {r['forward_seconds']:8.2f} s  "
        f"{r['forward_images_per_second']:8.1f} images/s",
        f"  all three heatmaps:            {r['heatmaps_seconds']:8.2f} s  "
        f"{r['heatmaps_images_per_second']:8.1f} images/s",
        f"  CKA overhead: {r['cka_overhead']:.0%} of the forward-only time"
        + (f"; peak GPU memory {r['peak_heatmaps_gib']:.1f} GiB with the heatmaps "
           f"({r['peak_forward_gib']:.1f} GiB forward only, {r['peak_reserved_gib']:.1f} GiB reserved)"
           if r["peak_heatmaps_gib"] is not None else ""),
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit", default="vit_base_patch16_224")
    parser.add_argument("--resnet", default="resnet50")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=sorted(AMP), default="none")
    parser.add_argument("--gram-dtype", choices=sorted(GRAM), default="float32")
    parser.add_argument("--image-size", type=int, default=224, help="input size (the models' own: 224 for the "
                        "paper's, 160 for timm's test_vit / test_resnet)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    result = measure(args.vit, args.resnet, args.images, args.batch, args.device, args.amp, args.gram_dtype,
                     args.image_size)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

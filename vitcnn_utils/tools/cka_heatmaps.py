"""All-layer CKA heatmaps of a ViT and a ResNet from the command line, on one process or many (``torchrun``).

    python -m vitcnn_utils.tools.cka_heatmaps -f params/paper/representation_structure.yaml --out heatmaps.npz
    torchrun --nproc_per_node=8 -m vitcnn_utils.tools.cka_heatmaps -f params/paper/representation_structure.yaml \\
        --amp bf16 --out heatmaps.npz

The parameter file is a chapter's (``vit``, ``resnet``, ``weights``, ``pretrained``, ``data``, ``data_dir``,
``n_images``, ``batch_size``, ``image_size``, ``seed``, ``device``; other keys are ignored); flags override
it. Under ``torchrun`` every process takes every ``world_size``-th minibatch (:func:`vitcnn_utils.data.
analysis_batches` with ``shard``), the HSIC sums are all-reduced (NCCL on GPUs, gloo on CPUs), and rank 0
writes the heatmaps: the same numbers as one process on the same minibatches. The ``.npz`` holds
``within_vit``, ``within_resnet``, ``vit_x_resnet`` (float64 CKA), ``vit_layers``, ``resnet_layers`` and
``n_images``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import data, measure
from ..cka import GRAM_DTYPES as GRAM
from ..models import load_named
from ..runner import AMP_DTYPES as AMP

DEFAULTS = {"vit": "zoo:vit-cls", "resnet": "zoo:resnet", "weights": {}, "pretrained": False,
            "data": "fashion-mnist", "data_dir": None, "n_images": 2048, "batch_size": 256, "image_size": None,
            "seed": 0, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _arguments(argv=None) -> tuple[dict, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-f", "--params", help="a chapter's YAML parameter file, e.g. params/paper/*.yaml")
    for key in ("vit", "resnet", "data", "data-dir", "device"):
        parser.add_argument(f"--{key}")
    for key in ("n-images", "batch-size", "image-size", "seed"):
        parser.add_argument(f"--{key}", type=int)
    parser.add_argument("--amp", choices=sorted(AMP), default="none", help="autocast dtype of the forward passes")
    parser.add_argument("--gram-dtype", choices=sorted(GRAM), default="float64",
                        help="Gram products X Xᵀ; U-centring and HSIC sums stay float64 (float32 Grams are "
                             "tested within 1e-6 of float64)")
    parser.add_argument("--out", default="heatmaps.npz", help="where rank 0 writes the heatmaps")
    args = parser.parse_args(argv)
    params = dict(DEFAULTS)
    if args.params:
        params.update({k: v for k, v in (yaml.safe_load(Path(args.params).read_text()) or {}).items()
                       if k in DEFAULTS})
    for key in DEFAULTS:
        flag = getattr(args, key, None)
        if flag is not None:
            params[key] = flag
    return params, args


def _init_distributed(device: str) -> tuple[int, int, str]:
    """``(rank, world_size, device)``; joins the process group ``torchrun`` describes in the environment (also
    for ``--nproc_per_node=1``, so that a one-GPU launch sets up NCCL as a many-GPU one does)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:         # a plain `python -m`, not torchrun
        return 0, 1, device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return torch.distributed.get_rank(), world, device


def main(argv=None) -> dict:
    """Run the heatmaps; returns rank 0's summary (``{}`` on the other ranks)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params, args = _arguments(argv)
    rank, world, device = _init_distributed(params["device"])
    try:
        models = {label: load_named(params[key], params["weights"], params["pretrained"], device)
                  for label, key in (("ViT", "vit"), ("ResNet", "resnet"))}
        batches = data.analysis_batches(params["data"], params["n_images"], params["batch_size"], params["seed"],
                                        params["data_dir"], params["image_size"], shard=(rank, world))
        start = time.perf_counter()
        heatmaps = measure.model_heatmaps(models, batches, device=device, gram_dtype=GRAM[args.gram_dtype],
                                      amp_dtype=AMP[args.amp], progress=rank == 0)
        seconds = time.perf_counter() - start
        if torch.distributed.is_initialized():   # one collective on every backend (NCCL too, at any world size)
            nccl = torch.distributed.get_backend() == "nccl"
            torch.distributed.barrier(**({"device_ids": [torch.cuda.current_device()]} if nccl else {}))
        if rank != 0:
            return {}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, within_vit=heatmaps["ViT", "ViT"].numpy(), within_resnet=heatmaps["ResNet", "ResNet"].numpy(),
                 vit_x_resnet=heatmaps["ViT", "ResNet"].numpy(), vit_layers=np.array(heatmaps.names["ViT"]),
                 resnet_layers=np.array(heatmaps.names["ResNet"]), n_images=heatmaps.n_images)
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
        summary = {"n_images": heatmaps.n_images, "processes": world, "backend": backend, "seconds": seconds,
                   "images_per_second": heatmaps.n_images / seconds, "out": str(out)}
        print(f"{heatmaps.n_images} images, {len(heatmaps.names['ViT'])} x {len(heatmaps.names['ResNet'])} layers, "
              f"{world} process(es){f' ({backend})' if backend else ''}: {seconds:.1f} s "
              f"({summary['images_per_second']:.1f} images/s); wrote {out}")
        return summary
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

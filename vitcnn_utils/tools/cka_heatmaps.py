"""All-layer CKA heatmaps of a ViT and a ResNet from the command line, on one process or many (``torchrun``).

    python -m vitcnn_utils.tools.cka_heatmaps -f params/paper/representation_structure.yaml --out heatmaps.npz
    torchrun --nproc_per_node=8 -m vitcnn_utils.tools.cka_heatmaps -f params/paper/representation_structure.yaml \\
        --amp bf16 --out heatmaps.npz

The parameter file is a chapter's (``vit``, ``resnet``, ``weights``, ``pretrained``, ``data``, ``data_dir``,
``n_images``, ``batch_size``, ``image_size``, ``seed``, ``device``, ``gram_dtype``; the chapters' other parameters
are ignored, any other name is an error, as is a value of the wrong type); flags override it. ``--out`` gets NumPy's
``.npz`` suffix if it lacks it. Under ``torchrun`` every process takes every ``world_size``-th minibatch
(:func:`vitcnn_utils.data.analysis_batches` with ``shard``), the HSIC sums are all-reduced (NCCL on GPUs, gloo
on CPUs), and rank 0 writes the heatmaps: the same numbers as one process on the same minibatches. The ``.npz`` holds
``within_vit``, ``within_resnet``, ``vit_x_resnet`` (float64 CKA), ``vit_layers``, ``resnet_layers`` and
``n_images``, and beside each heatmap its 95% interval over image sampling, ``<heatmap>_low`` and
``<heatmap>_high`` of the same shape (:meth:`vitcnn_utils.cka.MinibatchCKA.interval`: a delete-one-minibatch
jackknife; NaN when there are fewer than 2 minibatches), with ``interval_level``.
"""
from __future__ import annotations

import argparse
import difflib
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import data, measure
from ..cka import GRAM_DTYPES as GRAM
from ..cka import Heatmaps
from ..models import load_named
from ..runner import AMP_DTYPES as AMP

DEFAULTS = {"vit": "zoo:vit-cls", "resnet": "zoo:resnet", "weights": {}, "pretrained": False,
            "data": "fashion-mnist", "data_dir": None, "n_images": 2048, "batch_size": 256, "image_size": None,
            "seed": 0, "device": "cuda" if torch.cuda.is_available() else "cpu", "gram_dtype": "float64"}
EXAMPLES = {**DEFAULTS, "data_dir": "/path/to/fashion-mnist", "image_size": 224}   # the type of each (None: unset)
CHAPTER_ONLY = ("n_draws", "figures_dir", "results_dir", "use_cache")   # if the notebooks are not at hand


def _arguments(argv=None) -> tuple[dict, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-f", "--params", help="a chapter's YAML parameter file, e.g. params/paper/*.yaml")
    for key in ("vit", "resnet", "data", "data-dir", "device"):
        parser.add_argument(f"--{key}")
    for key in ("n-images", "batch-size", "image-size", "seed"):
        parser.add_argument(f"--{key}", type=int)
    parser.add_argument("--amp", choices=sorted(AMP), default="none", help="autocast dtype of the forward passes")
    parser.add_argument("--gram-dtype", choices=sorted(GRAM),
                        help="Gram products X Xᵀ (default: the file's gram_dtype, else float64); U-centring and "
                             "HSIC sums stay float64 (float32 Grams are tested within 1e-6 of float64)")
    parser.add_argument("--out", default="heatmaps.npz", help="where rank 0 writes the heatmaps")
    args = parser.parse_args(argv)
    params = dict(DEFAULTS)
    if args.params:
        params.update(_file_parameters(args.params))
    for key in DEFAULTS:
        flag = getattr(args, key, None)
        if flag is not None:
            params[key] = flag
    return params, args


def _file_parameters(path: str) -> dict:
    """This tool's parameters in the YAML file ``path`` (a chapter's: its other parameters are ignored). A file
    that is not a mapping, a name that is neither this tool's nor a chapter's parameter (a typo) and a value of
    the wrong type each stop with one line saying what is wrong and what to write instead."""
    from . import book
    given = book.load_params(path)
    try:
        chapters = set().union(*(book.chapter_parameters(book.ROOT / "notebooks" / f"{c}.ipynb", {})
                                 for c in book.CHAPTERS))
    except FileNotFoundError:
        chapters = set(CHAPTER_ONLY)
    unknown = sorted(set(given) - set(DEFAULTS) - chapters)
    if unknown:
        close = {k: difflib.get_close_matches(k, list(DEFAULTS), n=1) for k in unknown}
        hints = "".join(f" ({k}: did you mean {c[0]}?)" for k, c in close.items() if c)
        what = "is not a parameter" if len(unknown) == 1 else "are not parameters"
        raise SystemExit(f"{path}: {', '.join(unknown)} {what} of cka_heatmaps{hints}; its parameters are "
                         f"{', '.join(DEFAULTS)} (a chapter's other parameters are ignored)")
    own = {k: v for k, v in given.items() if k in DEFAULTS}
    for key, value in own.items():
        error = None if value is None and DEFAULTS[key] is None else \
            book.parameter_type_error(key, value, EXAMPLES[key])
        if error:
            raise SystemExit(f"{path}: {error}")
    if own.get("gram_dtype", "float64") not in GRAM:
        raise SystemExit(f"{path}: gram_dtype must be one of {', '.join(GRAM)}, got {own['gram_dtype']!r}")
    return own


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


INTERVAL_LEVEL = 0.95


def _heatmaps_and_interval(models, batches, device, gram_dtype, amp_dtype, progress) -> tuple[Heatmaps, ...]:
    """:func:`vitcnn_utils.measure.model_heatmaps` (the same accumulation, :func:`~vitcnn_utils.measure.model_cka`) with its
    :data:`INTERVAL_LEVEL` interval: ``(heatmaps, low, high)``, the bounds as :class:`~vitcnn_utils.cka.Heatmaps`
    (NaN, with a note, for fewer than 2 minibatches)."""
    cka, names = measure.model_cka(models, batches, device=device, gram_dtype=gram_dtype, amp_dtype=amp_dtype,
                                   progress=progress)
    matrix = cka.compute()
    if cka.total_batches >= 2:
        low, high = cka.interval(INTERVAL_LEVEL)
    else:
        print("one minibatch only: no interval (it needs at least 2); the .npz holds NaN bounds")
        low = high = torch.full_like(matrix, float("nan"))
    return tuple(Heatmaps(names, m, cka.total_examples) for m in (matrix, low, high))


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
        heatmaps, low, high = _heatmaps_and_interval(models, batches, device, GRAM[params["gram_dtype"]],
                                                     AMP[args.amp], progress=rank == 0)
        seconds = time.perf_counter() - start
        if torch.distributed.is_initialized():   # one collective on every backend (NCCL too, at any world size)
            nccl = torch.distributed.get_backend() == "nccl"
            torch.distributed.barrier(**({"device_ids": [torch.cuda.current_device()]} if nccl else {}))
        if rank != 0:
            return {}
        out = Path(args.out if args.out.endswith(".npz") else args.out + ".npz")   # the name np.savez writes
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, within_vit=heatmaps["ViT", "ViT"].numpy(), within_resnet=heatmaps["ResNet", "ResNet"].numpy(),
                 vit_x_resnet=heatmaps["ViT", "ResNet"].numpy(), vit_layers=np.array(heatmaps.names["ViT"]),
                 resnet_layers=np.array(heatmaps.names["ResNet"]), n_images=heatmaps.n_images,
                 interval_level=INTERVAL_LEVEL,
                 **{f"{key}_{side}": bound[a, b].numpy() for side, bound in (("low", low), ("high", high))
                    for key, (a, b) in (("within_vit", ("ViT", "ViT")), ("within_resnet", ("ResNet", "ResNet")),
                                        ("vit_x_resnet", ("ViT", "ResNet")))})
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

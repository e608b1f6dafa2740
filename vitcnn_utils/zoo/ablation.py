"""The local-heads recipe ablation (issue 14): does any cheap change to the zoo ViT's recipe give it local
attention heads? ``python -m vitcnn_utils.zoo.ablation [--only NAME ...] [--device cuda]``.

Every variant is the zoo's CLS ViT trained on all 60,000 training images for :data:`EPOCHS` epochs (the same
number of optimisation steps for all), seed 0, changing one thing: CutMix, CutMix with MixUp, random resized
crops, 8 heads of width 16, 2-px patches (a 14×14 grid, as ViT-B/16 at 224 px; width 64 to keep the cost
near the baseline's), fixed 2-D sin-cos position embeddings, or DeiT's hard-label distillation from the zoo
ResNet through a distillation token (issue 25: locality need not then be learned from 60,000 images).
Two variants are defined by the others' results: ``patch2-best`` (2-px patches with whichever of sin-cos and
distillation gives block 0 its most local head) and ``best-full`` (the most local 5-epoch variant at the zoo's
20 epochs, the schedule the adoption rule, :data:`ADOPTION`, is judged at). For each, the mean attention distance of every head of every block is measured on
:data:`DRAWS` independent draws of :data:`N_IMAGES` test images, and the results are written to
:data:`RESULTS` after each variant (the table the local/global chapter shows). Training resumes from per-epoch
checkpoints in ``--checkpoints``; a variant whose recorded spec matches is skipped. The weights stay in the
checkpoint folder (not shipped): only the measurements are.
"""
from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from . import VIT, VIT_EPOCHS, ZOO_DIR, load as load_zoo
from ..measure import attention_distances, uniform_distance
from ..data import analysis_batches, load_fashion_mnist
from ..architectures import build_architecture
from ..train import Recipe, train

RESULTS = ZOO_DIR / "recipe_ablation.json"
EPOCHS = 5
DRAWS, N_IMAGES, BATCH = 5, 500, 100
LOCAL_FRACTION = 0.75   # a head is local when its distance is below this fraction of the uniform distance

VARIANTS: dict[str, tuple[dict, Recipe]] = {     # in training order: the likeliest candidates first
    "cutmix": ({**VIT, "pool": "cls"}, Recipe(EPOCHS, cutmix=1.0)),
    "baseline": ({**VIT, "pool": "cls"}, Recipe(EPOCHS)),
    "cutmix+mixup": ({**VIT, "pool": "cls"}, Recipe(EPOCHS, cutmix=1.0, mixup=0.8)),
    "heads8": ({**VIT, "pool": "cls", "num_heads": 8}, Recipe(EPOCHS)),
    "patch2-w64": ({**VIT, "pool": "cls", "patch_size": 2, "embed_dim": 64}, Recipe(EPOCHS)),  # ~2x the cost
    "crop": ({**VIT, "pool": "cls"}, Recipe(EPOCHS, crop_scale=0.35)),
    "sincos": ({**VIT, "pool": "cls", "pos_embed": "sincos"}, Recipe(EPOCHS)),
    "distill": ({**VIT, "pool": "cls", "distilled": True}, Recipe(EPOCHS, distill="resnet")),
}
COMBINED = ("sincos", "distill")       # what patch2-best combines 2-px patches with: the more local of these
DERIVED = ("patch2-best", "best-full")  # defined by the measured results of the variants above

# Stated before the results (issue 25): a recipe is adopted for the zoo's ViTs when, at the full schedule, block 0
# has at least one head below `local_fraction` × the uniform-attention distance in every draw, for two training
# seeds, at a test accuracy at most `accuracy_margin` below the shipped vit-cls (89.72%).
ADOPTION = {"local_fraction": LOCAL_FRACTION, "seeds": 2, "accuracy_margin": 0.02, "reference": "vit-cls"}


def block0_locality(distances_px: list, uniform_distance_px: float) -> float:
    """The most local block-0 head of a measured variant (``distances_px`` ``[draw][block][head]``): the
    smallest over heads of a head's mean distance over the draws, over the uniform-attention distance (lower
    is more local; 1 is uniform attention). The local/global chapter names its most local variant by it too."""
    heads = zip(*(draw[0] for draw in distances_px))
    return min(sum(h) / len(h) for h in heads) / uniform_distance_px


def _candidates(name: str) -> list[str]:
    """The variants a derived variant is chosen from."""
    return list(COMBINED) if name == "patch2-best" else [n for n in [*VARIANTS, "patch2-best"] if n != "baseline"]


def _locality(entry: dict) -> float:
    return block0_locality(entry["distances_px"], entry["uniform_distance_px"])


def resolve(name: str, results: dict) -> tuple[dict, Recipe]:
    """The ``(architecture, recipe)`` of variant ``name``; the derived ones from ``results`` (a
    :func:`load_results` dict), which must hold the variants they are chosen from."""
    if name in VARIANTS:
        return VARIANTS[name]
    if name not in DERIVED:
        raise ValueError(f"no ablation variant {name!r}; the variants are {', '.join([*VARIANTS, *DERIVED])}")
    pool = _candidates(name)
    measured = [n for n in pool if n in results]
    missing = [n for n in COMBINED if n not in results] if name == "patch2-best" else []
    if missing or not measured:
        raise ValueError(f"{name} is chosen from the measured results of {', '.join(missing or pool)}, which are "
                         f"not measured yet: run `python -m vitcnn_utils.zoo.ablation --only "
                         f"{' '.join(missing or pool)}` first")
    best = min(measured, key=lambda n: _locality(results[n]))
    arch, recipe = resolve(best, results) if best in VARIANTS else _from_entry(results[best])
    if name == "patch2-best":
        return {**arch, "patch_size": 2, "embed_dim": 64}, recipe
    return arch, Recipe(**{**recipe.to_dict(), "epochs": VIT_EPOCHS})


def _from_entry(entry: dict) -> tuple[dict, Recipe]:
    return entry["arch"], Recipe(**entry["recipe"])


def measure(model: torch.nn.Module, device: str = "cpu") -> dict:
    """Head distances of ``model`` on :data:`DRAWS` draws of test images: ``{"distances_px": [draw][block]
    [head], "uniform_distance_px", "local_heads": [draw][block]}`` (a local head is below
    :data:`LOCAL_FRACTION` × the uniform-attention distance)."""
    uniform = uniform_distance(model)
    draws = [attention_distances(model, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=seed),
                                       device=device)[0] for seed in range(DRAWS)]
    return {"distances_px": [d.tolist() for d in draws], "uniform_distance_px": uniform,
            "local_heads": [(d < LOCAL_FRACTION * uniform).sum(-1).tolist() for d in draws]}


def _derivation(name: str, results: dict) -> str:
    scores = {n: round(_locality(results[n]), 4) for n in _candidates(name) if n in results}
    return f"the most local block-0 head among {scores} (distance / uniform, mean over draws)"


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[*VARIANTS, *DERIVED])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--checkpoints", default=".cache/ablation")
    args = parser.parse_args(argv)
    train_set, test = load_fashion_mnist("train", args.data_dir), load_fashion_mnist("test", args.data_dir)
    for name in args.only or [*VARIANTS, *DERIVED]:
        arch, recipe = resolve(name, load_results())
        done = load_results().get(name)
        if done and done["arch"] == arch and done["recipe"] == recipe.to_dict():
            print(f"{name}: measured already (test accuracy {done['test_accuracy']:.4f}); skipping")
            continue
        torch.manual_seed(0)
        model = build_architecture(arch)
        teacher = load_zoo(recipe.distill, args.device) if recipe.distill else None
        record = train(model, train_set, test, recipe, seed=0, device=args.device, desc=name,
                       checkpoint=f"{args.checkpoints}/{name}.pt", teacher=teacher)
        entry = {"recipe_name": name, "arch": arch, "recipe": recipe.to_dict(), "epochs": recipe.epochs,
                 "seed": 0, "test_accuracy": record["test_accuracy"], "history": record["history"],
                 "train_seconds": record["train_seconds"], "device": record["device"],
                 "torch": torch.__version__, "python": platform.python_version(),
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "draws": DRAWS, "n_images": N_IMAGES, "local_fraction": LOCAL_FRACTION,
                 **({"derived_from": _derivation(name, load_results())} if name in DERIVED else {}),
                 **measure(model.eval(), args.device)}
        results = load_results()
        results[name] = entry
        tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")  # two variants may train at once
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(RESULTS)
        local0 = [c[0] for c in entry["local_heads"]]
        print(f"{name}: test accuracy {entry['test_accuracy']:.4f}, {entry['train_seconds']:.0f} s, local heads "
              f"in block 0 per draw {local0} (uniform distance {entry['uniform_distance_px']:.2f} px)")


if __name__ == "__main__":
    main()

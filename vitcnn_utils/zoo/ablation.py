"""The local-heads recipe ablation (issue 14): does any cheap change to the zoo ViT's recipe give it local
attention heads? ``python -m vitcnn_utils.zoo.ablation [--only NAME ...] [--device cuda]``.

Every variant is the zoo's CLS ViT trained on all 60,000 training images for :data:`EPOCHS` epochs (the same
number of optimisation steps for all), seed 0, changing one thing: CutMix, CutMix with MixUp, random resized
crops, 8 heads of width 16, or 2-px patches (a 14×14 grid, as ViT-B/16 at 224 px; width 64 to keep the cost
near the baseline's). For each, the mean attention distance of every head of every block is measured on
:data:`DRAWS` independent draws of :data:`N_IMAGES` test images, and the results are written to
:data:`RESULTS` after each variant (the table the local/global chapter shows). Training resumes from per-epoch
checkpoints in ``--checkpoints``; a variant whose recorded spec matches is skipped. The weights stay in the
checkpoint folder (not shipped): only the measurements are.
"""
from __future__ import annotations

import argparse
import json
import platform

import torch

from . import VIT, ZOO_DIR
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
}


def measure(model: torch.nn.Module, device: str = "cpu") -> dict:
    """Head distances of ``model`` on :data:`DRAWS` draws of test images: ``{"distances_px": [draw][block]
    [head], "uniform_distance_px", "local_heads": [draw][block]}`` (a local head is below
    :data:`LOCAL_FRACTION` × the uniform-attention distance)."""
    uniform = uniform_distance(model)
    draws = [attention_distances(model, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=seed),
                                       device=device)[0] for seed in range(DRAWS)]
    return {"distances_px": [d.tolist() for d in draws], "uniform_distance_px": uniform,
            "local_heads": [(d < LOCAL_FRACTION * uniform).sum(-1).tolist() for d in draws]}


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--checkpoints", default=".cache/ablation")
    args = parser.parse_args(argv)
    train_set, test = load_fashion_mnist("train", args.data_dir), load_fashion_mnist("test", args.data_dir)
    for name in args.only or list(VARIANTS):
        arch, recipe = VARIANTS[name]
        done = load_results().get(name)
        if done and done["arch"] == arch and done["recipe"] == recipe.to_dict():
            print(f"{name}: measured already (test accuracy {done['test_accuracy']:.4f}); skipping")
            continue
        torch.manual_seed(0)
        model = build_architecture(arch)
        record = train(model, train_set, test, recipe, seed=0, device=args.device, desc=name,
                       checkpoint=f"{args.checkpoints}/{name}.pt")
        entry = {"recipe_name": name, "arch": arch, "recipe": recipe.to_dict(), "epochs": recipe.epochs,
                 "seed": 0, "test_accuracy": record["test_accuracy"], "history": record["history"],
                 "train_seconds": record["train_seconds"], "device": record["device"],
                 "torch": torch.__version__, "python": platform.python_version(),
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "draws": DRAWS, "n_images": N_IMAGES, "local_fraction": LOCAL_FRACTION,
                 **measure(model.eval(), args.device)}
        results = load_results()
        results[name] = entry
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(RESULTS)
        local0 = [c[0] for c in entry["local_heads"]]
        print(f"{name}: test accuracy {entry['test_accuracy']:.4f}, {entry['train_seconds']:.0f} s, local heads "
              f"in block 0 per draw {local0} (uniform distance {entry['uniform_distance_px']:.2f} px)")


if __name__ == "__main__":
    main()

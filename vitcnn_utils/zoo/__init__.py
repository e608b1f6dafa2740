"""The project's own trained models on Fashion-MNIST ("the zoo"), shipped as safetensors in this folder.

``load("vit-cls")`` (or ``models.load_model("zoo:vit-cls")``) rebuilds the architecture recorded in
``manifest.json``, checks the weights file's sha256 against the manifest, and loads it. ``python -m
vitcnn_utils.zoo`` trains the whole zoo (see :mod:`vitcnn_utils.zoo.__main__`). :func:`training_summary`
and :func:`optimisation_steps` report what a loaded model was trained on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..architectures import build_architecture
from ..train import Recipe

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = ZOO_DIR / "manifest.json"

VIT = {"kind": "vit", "patch_size": 4, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0}
RESNET = {"kind": "resnet", "layers": [1, 2, 2, 1], "channels": [16, 32, 64, 128], "stem_width": 64}
VIT_EPOCHS, RESNET_EPOCHS = 20, 10  # 10 ViT epochs reached 87.2% (CLS) / 87.4% (GAP), under the 88% floor
SMALL_BUDGET_EPOCHS = 3  # full-data-equivalent epochs of every small-data and no-skip model (see _budget_epochs)
RESNET_RECIPE = {"precision": "bf16"}  # 2.5x faster on CPU (see train.Recipe); the ViT trains in float32
FRACTIONS = (0.03, 0.10, 0.30)
NO_SKIP_BLOCKS = (1, 3, 5)  # early, middle, late of 6 blocks (0-based)
# Every model a verdict compares also exists with training seed 1, as "<name>-s1" (its "seed twin"). A twin has
# its model's spec except the seed, and the seed sets everything random in training: the initialisation, the
# batch order and augmentation and, for the small-data models, which images form the fraction (a new draw of the
# 3/10/30% subset, so a twin's spread covers the sampling of the small data set too). A twin may also have been
# trained on another machine (CPU model, GPU), whose kernels round differently; that is noise of the same kind.
SEED_REPLICATED = ("resnet", "vit-cls", "vit-gap", "vit-cls-e3", "vit-cls-f03", "vit-cls-f10", "vit-cls-f30",
                   "resnet-f03", "resnet-f10", "resnet-f30", "vit-cls-noskip1", "vit-cls-noskip3",
                   "vit-cls-noskip5")


@dataclass(frozen=True)
class Spec:
    """What to train: an architecture dict, the fraction of the 60,000 training images, a recipe, a seed."""
    arch: dict
    fraction: float
    recipe: Recipe
    seed: int = 0


def _budget_epochs(fraction: float) -> int:
    # Every small-data model gets the same optimisation steps, SMALL_BUDGET_EPOCHS epochs of the full data set
    # (the 30% model trains 10 epochs, the 3% model 100): enough steps to fit its data, at a fixed compute
    # budget. The no-skip ViTs get the same budget (fraction 1.0 -> 3 epochs): they are compared for
    # representation structure; their accuracies are reported beside their (shorter) training.
    return round(SMALL_BUDGET_EPOCHS / fraction)


def _specs() -> dict[str, Spec]:
    specs = {
        "vit-cls": Spec({**VIT, "pool": "cls"}, 1.0, Recipe(VIT_EPOCHS)),
        "vit-gap": Spec({**VIT, "pool": "gap"}, 1.0, Recipe(VIT_EPOCHS)),
        "resnet": Spec(dict(RESNET), 1.0, Recipe(RESNET_EPOCHS, **RESNET_RECIPE)),
    }
    for fraction in FRACTIONS:
        tag = f"f{round(fraction * 100):02d}"
        specs[f"vit-cls-{tag}"] = Spec({**VIT, "pool": "cls"}, fraction,
                                       Recipe(_budget_epochs(fraction)))
        specs[f"resnet-{tag}"] = Spec(dict(RESNET), fraction, Recipe(_budget_epochs(fraction),
                                                                         **RESNET_RECIPE))
    # The matched control: the intact ViT at the small-data budget (3 full-data epochs), i.e. the no-skip
    # models' recipe with the skips in place, and a 100% model with the small-data models' compute.
    specs["vit-cls-e3"] = Spec({**VIT, "pool": "cls"}, 1.0, Recipe(_budget_epochs(1.0)))
    for block in NO_SKIP_BLOCKS:
        specs[f"vit-cls-noskip{block}"] = Spec({**VIT, "pool": "cls", "no_skip_blocks": [block]}, 1.0,
                                               Recipe(_budget_epochs(1.0)))
    # Seed twins (see SEED_REPLICATED): so seed-to-seed differences can be set beside the effects measured.
    for name in SEED_REPLICATED:
        specs[f"{name}-s1"] = dataclasses.replace(specs[name], seed=1)
    return specs


SPECS = _specs()


def display_name(name: str) -> str:
    """How a reader sees a model: ``"zoo:vit-cls-e3"`` → ``"ViT-CLS, 3 epochs"``, ``"zoo:resnet-f03-s1"`` →
    ``"ResNet, 3% of the data (seed 1)"``, ``"zoo:vit-cls-noskip3"`` → ``"ViT-CLS without block 3's skips"``;
    any other name (a timm model, a file) is returned as it is."""
    base = name[len("zoo:"):] if isinstance(name, str) and name.startswith("zoo:") else None
    spec = SPECS.get(base) if base else None
    if spec is None:
        return str(name)
    arch = spec.arch
    text = "ResNet" if arch["kind"] == "resnet" else f"ViT-{arch.get('pool', 'cls').upper()}"
    if arch.get("no_skip_blocks"):
        text += f" without block {', '.join(map(str, arch['no_skip_blocks']))}'s skips"
    elif spec.fraction < 1:
        text += f", {round(spec.fraction * 100)}% of the data"
    elif spec.recipe.epochs != (VIT_EPOCHS if arch["kind"] == "vit" else RESNET_EPOCHS):
        text += f", {spec.recipe.epochs} epochs"
    return text + (f" (seed {spec.seed})" if spec.seed else "")


def manifest() -> dict:
    """The manifest: ``{name: entry}`` for every trained model shipped here; ``{}`` when there is no manifest
    (nothing trained yet: :func:`load` then says so). A manifest that is not valid JSON is a ValueError."""
    if not MANIFEST.is_file():
        return {}
    try:
        return json.loads(MANIFEST.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"the zoo manifest {MANIFEST} is not valid JSON ({err}): restore it from the "
                         f"repository (git checkout -- {MANIFEST.name} in {ZOO_DIR}) or retrain: "
                         f"python -m vitcnn_utils.zoo") from None


def is_current(name: str) -> bool:
    """Whether the manifest's ``name`` was trained with today's :data:`SPECS` entry (arch, fraction, recipe,
    seed); a model trained under an older spec is stale and ``python -m vitcnn_utils.zoo`` retrains it."""
    entry, spec = manifest().get(name), SPECS.get(name)
    if entry is None or spec is None:
        return False
    return (entry["arch"] == spec.arch and entry["fraction"] == spec.fraction and entry["seed"] == spec.seed
            and Recipe(**entry["recipe"]) == spec.recipe)


def available() -> list[str]:
    """Names of the trained models shipped with this installation."""
    return sorted(manifest())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


REQUIRED_KEYS = ("arch", "file", "sha256")  # what load() needs of a manifest entry


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A trained zoo model, in eval mode, with its manifest entry as ``model.zoo_entry``. Its input: raw
    ``uint8`` or float [0, 1] images ``(n, 1, 28, 28)`` through :func:`vitcnn_utils.data.preprocessor`."""
    if not MANIFEST.is_file():
        train = f"python -m vitcnn_utils.zoo{f' --only {name}' if name in SPECS else ''}"
        raise FileNotFoundError(f"the zoo manifest {MANIFEST} is missing, so no zoo model can be loaded: restore "
                                f"it and the weights from the repository (git checkout -- vitcnn_utils/zoo), or "
                                f"train: {train}")
    entries = manifest()
    if name not in entries:
        if name in SPECS:
            raise ValueError(f"zoo model {name!r} is not trained yet (not in {MANIFEST}): "
                             f"python -m vitcnn_utils.zoo --only {name}")
        raise ValueError(f"no zoo model named {name!r}; available: {', '.join(sorted(entries)) or '(none)'}")
    entry = entries[name]
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise ValueError(f"manifest entry {name!r} in {MANIFEST} lacks {', '.join(map(repr, missing))}: restore the "
                         f"manifest from the repository, or retrain the model (which rewrites its entry): "
                         f"python -m vitcnn_utils.zoo --only {name}")
    path = ZOO_DIR / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"zoo weights {path} are missing (reinstall the package or retrain: "
                                f"python -m vitcnn_utils.zoo --only {name})")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"checksum mismatch for {path}: sha256 {digest}, manifest says {entry['sha256']}")
    model = build_architecture(entry["arch"])
    model.load_state_dict(load_file(path))
    model.zoo_entry = entry
    return model.eval().to(device)


# -- what a zoo model was trained on ----------------------------------------------------------------------
def optimisation_steps(entry: dict) -> int:
    """Optimisation steps of a zoo model from its manifest ``entry``: ``epochs × ⌈train_images / batch⌉``
    (as in :func:`vitcnn_utils.train.train`)."""
    return int(entry["epochs"]) * math.ceil(entry["train_images"] / entry["recipe"]["batch_size"])


def training_summary(models: Mapping[str, torch.nn.Module]) -> dict[str, dict]:
    """What each model was trained on, from its zoo manifest entry (``model.zoo_entry``):
    ``{label: {"fraction", "train_images", "epochs", "test_accuracy"}}``, test accuracy in [0, 1]. Models
    without an entry (``arch:`` = untrained, timm models) get ``None`` for every field."""
    keys = ("fraction", "train_images", "epochs", "test_accuracy")
    out = {}
    for label, model in models.items():
        entry = getattr(model, "zoo_entry", None) or {}
        out[label] = {k: entry.get(k) for k in keys}
    return out


CARD_MODELS = {"vit-cls": "ViT, CLS token", "vit-gap": "ViT, global average pooling", "resnet": "ResNet"}


def model_card() -> str:
    """Markdown: the zoo's main models (architecture, parameters, training, test accuracy of each training seed),
    from the manifest; the small-data and no-skip variants in one closing sentence."""
    entries = manifest()
    lines = ["| Model | Architecture | Parameters | Trained on | Test accuracy (seed 0 / seed 1) |",
             "|---|---|---:|---|---|"]
    for name, label in CARD_MODELS.items():
        entry = entries.get(name)
        if entry is None:
            continue
        a = entry["arch"]
        arch = (f"{a['depth']} blocks, width {a['embed_dim']}, {a['num_heads']} heads, {a['patch_size']}×"
                f"{a['patch_size']} patches ({(28 // a['patch_size']) ** 2} tokens)" if a["kind"] == "vit" else
                f"bottleneck units {'-'.join(map(str, a['layers']))}, widths {'-'.join(map(str, a['channels']))}")
        accs = [f"{100 * entries[n]['test_accuracy']:.1f}%" for n in (name, f"{name}-s1") if n in entries]
        lines.append(f"| {label} | {arch} | {entry['parameters']:,} | {entry['train_images']:,} images, "
                     f"{entry['epochs']} epochs | {' / '.join(accs)} |")
    twins = [n for n in SEED_REPLICATED if f"{n}-s1" in entries]
    seeds = ("every model a finding compares was trained with two training seeds" if len(twins) == len(SEED_REPLICATED)
             else f"a second training seed exists of {len(twins)} of the {len(SEED_REPLICATED)} models findings "
                  f"compare (missing: {', '.join(n for n in SEED_REPLICATED if n not in twins)})")
    return "\n".join(lines) + ("\n\nAll models see 28 × 28 grey Fashion-MNIST images (10 classes). Variants of the CLS "
                               "ViT trained on 3%, 10% and 30% of the images, without the skip connections of one "
                               "block, or for 3 epochs only, and ResNets on 3–30% of the images, are described in "
                               f"the chapters that use them; {seeds}.\n")

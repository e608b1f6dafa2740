"""Chapter "local_global" (paper section 4, Figs 3–6, findings F3–F6) and the recipe ablation of issue 14.

:func:`run` measures everything the chapter plots and reports on ``n_draws`` independent draws of images and
returns a :class:`LocalGlobal`:

* mean attention distance of every head of every block (Figs 3–4) of the all-data ViT and the small-data ViT;
* CKA between single block-0 heads and the ResNet's lower layers (Fig 5), and its rank correlation with the
  heads' distances;
* effective receptive fields (Fig 6) and their half-mass radii, beside the radius of a uniform field;
* the recipe ablation (:func:`read_ablation`): what ``python -m vitcnn_utils.zoo.ablation`` has measured so far.

Draw ``d`` uses the test images chosen with ``seed + d`` (:func:`vitcnn_utils.data.analysis_batches`); the
receptive-field images of draw ``d`` are chosen with ``seed + ERF_SEED_OFFSET + d``, a separate range. Every
draw's measurement is cached (:func:`vitcnn_utils.cache.measured`: the call, with the draw's images, is the key).
:meth:`LocalGlobal.to_record` is what the chapter records for :mod:`vitcnn_utils.findings` (see its SCHEMA),
and the ``measured_*`` methods write the chapter's "Measured" paragraphs from the numbers.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import attention, cache, localisation, measure
from ..evidence import (FAILS, HOLDS, PROJECT, UNDECIDED, ChapterRecord, Check, Finding, Judgement, check, diff,
                        draws, interval, over_seeds, per_seed, replicates, runs_text, seeds_text)
from ..models import load_named
from ..zoo import VIT_EPOCHS, ablation, display_name as zoo_display_name
from .params import ChapterParams, draws as image_draws

LOCAL_HEAD, GLOBAL_HEAD = 0.75, 0.9   # a head is local below 0.75x, global above 0.9x the uniform-attention
                                     # distance (this project's reading: the paper calls heads local by eye)
ERF_SEED_OFFSET = 1000          # receptive-field images of draw d: seed + ERF_SEED_OFFSET + d
ADOPTION = ablation.ADOPTION    # issue 25's rule for adopting a recipe, stated before its results
ZOO_VIT = "vit-cls"             # the zoo model the ablation's variants are compared with


def _counts(values: Sequence[int]) -> str:
    """Integer counts over every seed's draws: ``"0 in all 10 runs"`` or ``"1–3 over 10 runs"``."""
    values = [int(v) for v in values]
    lo, hi = min(values), max(values)
    return f"{lo} in all {len(values)} runs" if lo == hi else f"{lo}–{hi} over {len(values)} runs"


def _mean(values) -> float:
    return statistics.fmean(float(v) for v in values)


# ---------------------------------------------------------------------------------------------------------
# The recipe ablation (issue 14), read from vitcnn_utils/zoo/recipe_ablation.json

_CHANGE_TEXT = {"cutmix": "CutMix (α = {})", "mixup": "MixUp (α = {})", "crop_scale": "random resized crops (area ≥ {})",
                "num_heads": "{} heads", "patch_size": "{}-px patches", "embed_dim": "width {}",
                "depth": "{} blocks", "shift": "shifts of ≤ {} px", "flip": "flips {}", "label_smoothing":
                "label smoothing {}", "lr": "learning rate {}", "weight_decay": "weight decay {}",
                "batch_size": "batch {}", "precision": "{}", "pos_embed": "fixed 2-D {} position embeddings",
                "distilled": "a distillation token", "distill": "hard-label distillation from the zoo {}"}


@dataclass(frozen=True)
class AblationVariant:
    """One measured recipe of the ablation: a CLS ViT trained on all 60,000 images for ``epochs`` epochs
    (seed 0), and its head distances on ``len(distances_px)`` draws of test images."""
    recipe: str                      # the variant's name in vitcnn_utils.zoo.ablation.VARIANTS
    change: str                      # what differs from the zoo ViT's recipe, in words
    epochs: int
    test_accuracy: float             # fraction, one training run
    uniform_distance_px: float       # of this variant's patch grid
    distances_px: list               # [draw][block][head], pixels
    train_seconds: float | None = None
    n_images: int | None = None      # test images per draw
    seed: int = 0                    # training seed
    spec: str = ""                   # the architecture and recipe (JSON): variants with equal specs are seeds

    @property
    def local_heads_per_block(self) -> list[list[int]]:
        """``[draw][block]``: heads below :data:`LOCAL_HEAD` × the uniform distance."""
        local = LOCAL_HEAD
        limit = local * self.uniform_distance_px
        return [[sum(h < limit for h in block) for block in draw] for draw in self.distances_px]

    @property
    def local_heads_block0(self) -> int:
        """Local heads of block 0 in the draw with the fewest (a count that holds in every draw)."""
        return min(draw[0] for draw in self.local_heads_per_block)

    @property
    def block0_distances_px(self) -> list[float]:
        """Each block-0 head's distance, mean over draws (head order)."""
        return [_mean(draw[0][h] for draw in self.distances_px) for h in range(len(self.distances_px[0][0]))]

    @property
    def block0_normalised(self) -> list[list[float]]:
        """``[draw][head]``: block-0 head distances ÷ the uniform-attention distance."""
        return [[h / self.uniform_distance_px for h in draw[0]] for draw in self.distances_px]

    def to_record(self) -> dict:
        return {"recipe": self.recipe, "change": self.change, "epochs": self.epochs,
                "test_accuracy": self.test_accuracy, "block0_distances_px": self.block0_distances_px,
                "uniform_distance_px": self.uniform_distance_px, "local_heads_block0": self.local_heads_block0,
                "local_heads_per_block": self.local_heads_per_block, "distances_px": self.distances_px,
                "train_seconds": self.train_seconds, "n_images": self.n_images}


@dataclass(frozen=True)
class RecipeAblation:
    """The ablation as far as it has run: measured variants (in the ablation's order), and the variants it
    names that are not measured yet (``pending``, never filled in)."""
    variants: tuple[AblationVariant, ...]
    pending: tuple[str, ...]
    epochs: int                      # epochs per variant (vitcnn_utils.zoo.ablation.EPOCHS)
    source: str                      # the JSON file read

    def candidates(self) -> list[AblationVariant]:
        """Variants whose block 0 has a local head in every draw (at any schedule and accuracy)."""
        return [v for v in self.variants if v.local_heads_block0 >= 1]

    def adopted(self, reference_accuracy: float, rule: dict = ADOPTION) -> list[AblationVariant]:
        """The variants that meet ``rule`` (:data:`vitcnn_utils.zoo.ablation.ADOPTION`): trained for the zoo's
        full schedule, block 0 with a local head in every draw, test accuracy at most ``rule["accuracy_margin"]``
        below ``reference_accuracy``, and all of that for ``rule["seeds"]`` training seeds of one spec (the
        first seed's variant is returned)."""

        def meets(v):
            return (v.epochs >= VIT_EPOCHS and v.local_heads_block0 >= 1
                    and v.test_accuracy >= reference_accuracy - rule["accuracy_margin"])
        good = [v for v in self.variants if meets(v)]
        by_spec = {}
        for v in good:
            by_spec.setdefault(v.spec, []).append(v)
        return [min(vs, key=lambda v: v.seed) for vs in by_spec.values() if len({v.seed for v in vs}) >= rule["seeds"]]

    def to_record(self) -> list[dict]:
        return [v.to_record() for v in self.variants]


def _change(arch: dict, recipe: dict, base_arch: dict, base_recipe: dict) -> str:
    diffs = [(k, v) for k, v in arch.items() if base_arch.get(k) != v]
    diffs += [(k, v) for k, v in recipe.items() if k != "epochs" and base_recipe.get(k) != v]
    diffs += [(k, "off") for k in base_recipe if k != "epochs" and k not in recipe]
    if not diffs:
        return "none (the zoo ViT's recipe)"
    keys = dict(diffs)
    text = []
    for k, v in diffs:
        if k == "num_heads":
            text.append(f"{v} heads of width {arch.get('embed_dim', base_arch['embed_dim']) // v}")
        elif k == "patch_size":
            grid = arch.get("img_size", 28) // v
            text.append(f"{v}-px patches ({grid}×{grid} grid)")
        elif k == "embed_dim" and "num_heads" in keys:
            continue                                        # said with the heads' width
        elif k == "distill":
            text.append(_CHANGE_TEXT[k].format(zoo_display_name(f"zoo:{v}")))
        else:
            text.append(_CHANGE_TEXT.get(k, k + " {}").format(v))
    return ", ".join(text)


def read_ablation(path: str | Path | None = None) -> RecipeAblation:
    """The recipe ablation recorded in ``path`` (default ``vitcnn_utils/zoo/recipe_ablation.json``): every
    measured variant, in the order of :data:`vitcnn_utils.zoo.ablation.VARIANTS` (unknown names after them),
    and the variants not measured yet. A missing file means nothing is measured yet."""
    path = Path(path) if path is not None else ablation.RESULTS
    entries = json.loads(path.read_text()) if path.is_file() else {}
    base_arch, base_recipe = ablation.VARIANTS["baseline"][0], ablation.VARIANTS["baseline"][1].to_dict()
    known = (*ablation.VARIANTS, *ablation.DERIVED)
    order = [n for n in known if n in entries] + sorted(n for n in entries if n not in known)
    variants = []
    for name in order:
        e = entries[name]
        variants.append(AblationVariant(
            recipe=name, change=_change(e.get("arch", base_arch), e.get("recipe", base_recipe), base_arch, base_recipe),
            epochs=int(e["epochs"]), test_accuracy=float(e["test_accuracy"]),
            uniform_distance_px=float(e["uniform_distance_px"]), distances_px=e["distances_px"],
            train_seconds=e.get("train_seconds"), n_images=e.get("n_images"), seed=int(e.get("seed", 0)),
            spec=json.dumps([e.get("arch", base_arch), e.get("recipe", base_recipe)], sort_keys=True)))
    pending = tuple(n for n in (*ablation.VARIANTS, *ablation.DERIVED) if n not in entries)
    return RecipeAblation(tuple(variants), pending, ablation.EPOCHS, str(path))


# ---------------------------------------------------------------------------------------------------------
# The chapter's result

@dataclass(frozen=True)
class LocalGlobal:
    """Everything the local/global chapter plots and reports. Lists ``[d]`` run over the ``n_draws`` draws."""
    n_draws: int
    n_images: int                          # analysis images per draw
    n_erf_images: int                      # receptive-field images per draw
    seeds: list[int]                       # analysis-image seed of each draw
    erf_seeds: list[int]                   # receptive-field-image seed of each draw
    models: dict[str, str]                 # {"vit", "vit_small_data", "resnet"}: names as loaded
    data_labels: dict[str, str]            # {"all data", "less data"}: "all the data (60,000 images)", "3% of ..."
    test_accuracy: dict[str, float | None]  # zoo test accuracy of each of models (None outside the zoo)
    epochs: dict[str, int | None]          # zoo training epochs of each of models
    patch_px: int
    image_px: int
    uniform_distance: float                # px, mean distance of uniform attention over the patch grid
    distances_all_data: list               # [d][block][head], px
    distances_less_data: list              # [d][block][head], px
    resnet_low_layers: list[str]
    head_distance: list                    # [d][head]: block-0 head distances (px) in the Fig 5 run
    head_cka: list                         # [d][head][layer]: CKA of each block-0 head with resnet_low_layers
    head_subset_rank_correlation: list     # [d]: Spearman ρ of head distance vs its mean CKA over the layers
    vit_erf_layers: list[str]
    resnet_erf_layers: list[str]
    erf_maps: dict[str, torch.Tensor] = field(repr=False)   # "ViT blocks.0" -> (H, W), mean over draws, max 1
    erf_radius: dict[str, list] = field(default_factory=dict)  # "ViT blocks.0" -> [d] half-mass radius, px
    uniform_erf_radius: float = float("nan")   # half-mass radius of a uniform field over the image, px
    ablation: RecipeAblation | None = None

    # -- derived numbers ----------------------------------------------------------------------------------
    def distances(self, which: str) -> list:
        """``[d][block][head]`` for ``which`` = ``"all data"`` or ``"less data"``."""
        return {"all data": self.distances_all_data, "less data": self.distances_less_data}[which]

    def local_heads(self, which: str = "all data") -> list[list[int]]:
        """``[d][block]``: heads below :data:`LOCAL_HEAD` × the uniform distance."""
        local = LOCAL_HEAD
        return [[sum(h < local * self.uniform_distance for h in b) for b in draw] for draw in self.distances(which)]

    def global_heads(self, which: str = "all data") -> list[list[int]]:
        """``[d][block]``: heads above :data:`GLOBAL_HEAD` × the uniform distance."""
        glob = GLOBAL_HEAD
        return [[sum(h > glob * self.uniform_distance for h in b) for b in draw] for draw in self.distances(which)]

    def block_extremes(self, which: str, block: int) -> tuple[list[float], list[float]]:
        """Per draw, the smallest and the largest head distance (px) of ``block``."""
        draws = self.distances(which)
        return [min(d[block]) for d in draws], [max(d[block]) for d in draws]

    def to_record(self) -> dict:
        """The chapter's record for :func:`vitcnn_utils.findings.record` (fields of the results SCHEMA, plus
        what the figures need)."""
        return {"n_draws": self.n_draws, "n_images": self.n_images, "n_erf_images": self.n_erf_images,
                "seeds": self.seeds, "erf_seeds": self.erf_seeds, "models": self.models,
                "image_px": self.image_px, "patch_px": self.patch_px,
                "uniform_distance": self.uniform_distance,
                "distances_all_data": self.distances_all_data, "distances_less_data": self.distances_less_data,
                "local_heads_all_data": self.local_heads("all data"),
                "local_heads_less_data": self.local_heads("less data"),
                "head_subset_rank_correlation": self.head_subset_rank_correlation,
                "head_distance": self.head_distance, "head_cka": self.head_cka,
                "resnet_low_layers": self.resnet_low_layers,
                "erf_radius": self.erf_radius, "uniform_erf_radius": self.uniform_erf_radius,
                "vit_erf_layers": self.vit_erf_layers, "resnet_erf_layers": self.resnet_erf_layers,
                "recipe_ablation": self.ablation.to_record() if self.ablation else [],
                "recipe_ablation_pending": list(self.ablation.pending) if self.ablation else []}

    # -- the recipe ablation -------------------------------------------------------------------------------
    def zoo_reference(self) -> dict | None:
        """The shipped all-data ViT as a row beside the ablation (its own epochs and this chapter's draws)."""
        if self.test_accuracy.get("vit") is None:
            return None
        u = self.uniform_distance
        return {"label": f"zoo `{self.models['vit'].removeprefix('zoo:')}` (shipped)",
                "epochs": self.epochs.get("vit"), "test_accuracy": self.test_accuracy["vit"],
                "block0_distances_px": [_mean(v) for v in _per_head(self.distances_all_data, 0)],
                "block0_normalised": [[h / u for h in d[0]] for d in self.distances_all_data],
                "local_heads_per_block": self.local_heads("all data"), "uniform_distance_px": u}

    def ablation_columns(self) -> list[tuple[str, list | None]]:
        """Figure columns: ``(label, [draw][head] block-0 distance ÷ uniform)`` per variant, the zoo ViT
        last, ``None`` for variants not measured yet."""
        cols = [(f"{v.recipe}\n{v.epochs} ep.", v.block0_normalised) for v in self.ablation.variants]
        cols += [(f"{name}\n(not yet\nmeasured)", None) for name in self.ablation.pending]
        ref = self.zoo_reference()
        if ref is not None:
            cols.append((f"zoo {self.models['vit'].removeprefix('zoo:')}\n{ref['epochs']} ep.", ref["block0_normalised"]))
        return cols

    def ablation_table(self) -> str:
        """The ablation as a Markdown table (variants not measured yet say so)."""
        head = ("| recipe | change from the zoo ViT | epochs | test accuracy | block-0 head distances (px, sorted) | "
                "÷ uniform | local heads per block, 0 → last (min–max over draws) |")
        lines = [head, "|---|---|---:|---:|---|---|---|"]

        def row(name, change, epochs, acc, dist, u, local):
            dist = sorted(dist)
            per_block = [[d[b] for d in local] for b in range(len(local[0]))]
            counts = " · ".join(f"{min(c)}" if min(c) == max(c) else f"{min(c)}–{max(c)}" for c in per_block)
            return (f"| {name} | {change} | {epochs} | {100 * acc:.2f}% | {', '.join(f'{x:.1f}' for x in dist)} | "
                    f"{', '.join(f'{x / u:.2f}' for x in dist)} | {counts} |")
        for v in self.ablation.variants:
            lines.append(row(f"`{v.recipe}`", v.change, v.epochs, v.test_accuracy, v.block0_distances_px,
                             v.uniform_distance_px, v.local_heads_per_block))
        for name in self.ablation.pending:
            epochs = VIT_EPOCHS if name == "best-full" else self.ablation.epochs      # best-full: the full schedule
            lines.append(f"| `{name}` | {_pending_change(name)} | {epochs} | not yet measured | – | – | – |")
        ref = self.zoo_reference()
        if ref is not None:
            lines.append(row(ref["label"], "none (reference: the full schedule)", ref["epochs"], ref["test_accuracy"],
                             ref["block0_distances_px"], ref["uniform_distance_px"], ref["local_heads_per_block"]))
        return "\n".join(lines)

    def ablation_numbers(self, rule: dict = ADOPTION) -> dict[str, str]:
        """The recipe ablation's set-up and the adoption rule, as the text inserts them (``{glue:text}`` keys of
        :func:`numbers`); ``"not measured"`` where no variant has finished."""
        ab = self.ablation or RecipeAblation((), (), ablation.EPOCHS, "")       # none read: every key still given
        absent = "not measured"
        zoo_epochs, reference = self.epochs.get("vit"), self.test_accuracy.get("vit")
        base = next((v for v in ab.variants if v.recipe == "baseline"), None)
        most = (min(ab.variants, key=lambda v: ablation.block0_locality(v.distances_px, v.uniform_distance_px))
                if ab.variants else None)
        total = len(ab.variants) + len(ab.pending)
        return {"lg_ab_measured": (f"All {total} recipes are measured" if not ab.pending else
                                   f"{len(ab.variants)} of {total} recipes are measured (not yet: "
                                   f"{', '.join(ab.pending)})"),
                "lg_ab_epochs": str(ab.epochs),
                "lg_zoo_epochs": str(zoo_epochs) if zoo_epochs is not None else "its own number of",
                "lg_zoo_acc": f"{100 * reference:.2f}%" if reference is not None else absent,
                "lg_ab_base_acc": f"{100 * base.test_accuracy:.2f}%" if base is not None else absent,
                "lg_ab_images": str(ab.variants[0].n_images or "?") if ab.variants else absent,
                "lg_ab_draws": str(len(ab.variants[0].distances_px)) if ab.variants else absent,
                "lg_ab_most_local": most.recipe if most else absent,
                "lg_ab_most_local_ratio": (interval([[min(d) for d in most.block0_normalised]]).text() if most
                                           else absent),       # one training run: the interval over its draws
                "lg_rule_epochs": str(VIT_EPOCHS), "lg_rule_local": f"{rule['local_fraction']:g}",
                "lg_rule_seeds": str(rule["seeds"]), "lg_rule_margin": f"{100 * rule['accuracy_margin']:.0f}"}

    def ablation_outcome(self, rule: dict = ADOPTION) -> str:
        """What ``rule`` (stated before the results) decides on the measured variants: the adopted recipe, the
        candidates that give block 0 a local head but miss another part of the rule, or, plainly, that none gives
        block 0 a local head (a measured negative result). The set-up and the rule itself are in the notebook's
        text (:meth:`ablation_numbers`)."""
        ab = self.ablation
        reference = self.test_accuracy.get("vit")
        pending = ", ".join(f"`{n}`" for n in ab.pending)
        if not ab.variants:
            return (f"**Not measured yet.** No variant of the ablation has finished ({pending} pending); run "
                    "`python -m vitcnn_utils.zoo.ablation` and rebuild this chapter.")
        lines = []
        adopted = ab.adopted(reference, rule) if reference is not None else []
        for v in ab.candidates():
            if v in adopted:
                continue
            lines.append(f"`{v.recipe}` gives block 0 {v.local_heads_block0} local head(s) in every draw at "
                         f"{100 * v.test_accuracy:.2f}% test accuracy after {v.epochs} epochs; it is not adopted: the "
                         f"rule also asks for the full schedule, {rule['seeds']} seeds and the accuracy margin, which "
                         f"{'it misses' if v.epochs >= VIT_EPOCHS else 'are not measured for it'}.")
        if adopted:
            best = adopted[0]
            lines.append(f"**`{best.recipe}` ({best.change}) is adopted**: it meets the rule at "
                         f"{100 * best.test_accuracy:.2f}% test accuracy. F3–F5 become testable once the zoo's ViTs are "
                         f"retrained with it.")
        elif ab.pending:
            lines.append(f"**No recipe measured so far meets the rule.** The {len(ab.pending)} not yet measured "
                         f"({pending}) could still change this; until then F3–F5 are judged on the zoo ViT, which has "
                         f"no local head.")
        else:
            ratio = {v.recipe: ablation.block0_locality(v.distances_px, v.uniform_distance_px) for v in ab.variants}
            full = [v for v in ab.variants if v.epochs >= VIT_EPOCHS]
            at_full = "; ".join(f"`{v.recipe}`, trained for the full {v.epochs} epochs, reaches "
                                f"{100 * v.test_accuracy:.2f}% with its most local head at {ratio[v.recipe]:.2f}×"
                                for v in full)
            lines.append(f"**No recipe meets the rule: a measured negative result.** Across the {len(ab.variants)} "
                         f"recipes tried, the most local block-0 head (mean over draws) sits at "
                         f"{min(ratio.values()):.2f}–{max(ratio.values()):.2f}× the uniform-attention distance, "
                         f"never below the {rule['local_fraction']:g}× of a local head"
                         + (f"; {at_full}" if at_full else "") + ". At this data scale (60,000 images of 28 px) the "
                         "ViT attends nearly uniformly in its first block whatever the recipe, which is what the "
                         "paper's F4 predicts for little data; F3 and F5 stay judged on the zoo ViT, which has no "
                         "local head.")
            lines += self._deeper_local_heads(full)
        return "\n\n".join(lines)

    def _deeper_local_heads(self, variants: Sequence[AblationVariant]) -> list[str]:
        """An observation outside the rule, in words: blocks after block 0 where a full-schedule variant has
        local heads in every draw, beside the zoo ViT measured in this chapter (its fewest local heads in any
        draw, per block). Empty when no such block exists."""
        zoo = [min(draw[b] for draw in self.local_heads("all data")) for b in range(len(self.distances_all_data[0]))]
        out = []
        for v in variants:
            counts = v.local_heads_per_block
            blocks = [(b, min(draw[b] for draw in counts)) for b in range(1, len(counts[0]))]
            blocks = [(b, n) for b, n in blocks if n > 0]
            if not blocks:
                continue
            where = ", ".join(f"{n} in block {b}" for b, n in blocks)
            zoo_where = ", ".join(f"{zoo[b]}" for b, _ in blocks) if len(zoo) == len(counts[0]) else None
            out.append(f"Outside the rule, which looks at block 0 only and is not moved after the results: `{v.recipe}` "
                       f"has local heads deeper in the network in every draw ({where}, of {len(counts[0])} blocks)"
                       + (f", where the zoo ViT measured above has {zoo_where}" if zoo_where is not None else "")
                       + f". Whether `{v.recipe}`'s recipe makes heads local deeper than block 0 is a hypothesis "
                       "that one training run does not settle.")
        return out


def _per_head(draws: list, block: int | None = None) -> list[list[float]]:
    """Per (block, head), or per head of ``block``, the values over draws."""
    if block is not None:
        return [[d[block][h] for d in draws] for h in range(len(draws[0][block]))]
    return [[d[b][h] for d in draws] for b in range(len(draws[0])) for h in range(len(draws[0][b]))]


def _pending_change(name: str) -> str:
    """The recipe change of a variant not measured yet (from its definition in the ablation)."""
    if name == "patch2-best":
        return "2-px patches (width 64) with the more local of sin-cos and distillation"
    if name == "best-full":
        return "the most local recipe, at the zoo's full schedule"
    if name not in ablation.VARIANTS:
        return "?"
    arch, recipe = ablation.VARIANTS[name]
    base_arch, base_recipe = ablation.VARIANTS["baseline"]
    return _change(arch, recipe.to_dict(), base_arch, base_recipe.to_dict())


# ---------------------------------------------------------------------------------------------------------
# Running the chapter

def _data_label(model: torch.nn.Module, name: str) -> str:
    entry = getattr(model, "zoo_entry", None)
    if not entry:
        return f"`{name}` (not a zoo model)"
    if entry["fraction"] == 1.0:
        return f"all the data ({entry['train_images']:,} images)"
    return f"{100 * entry['fraction']:g}% of the data ({entry['train_images']:,} images)"


def _nested(t: torch.Tensor) -> list:
    return t.double().tolist()



def numbers(results: Sequence[LocalGlobal]) -> dict[str, str]:
    """The numbers the chapter's text inserts (``{glue:text}`` keys): each an interval over every training seed's
    result (``results``: the chapter's own run first, then its seed twins') and its draws (``"13.9 [13.7,
    14.1]"``), and the reference distances of the patch grid."""
    r0 = results[0]
    u = r0.uniform_distance

    def iv(quantity, digits=2, scale=1.0, unit=""):
        return over_seeds(results, quantity, digits, scale, unit)
    out = {"lg_runs": runs_text(len(results), r0.n_draws), "lg_images": f"{r0.n_images:,}",
           "lg_image_px": str(r0.image_px), "lg_uniform": f"{u:.2f} px", "lg_local_px": f"{LOCAL_HEAD * u:.2f} px",
           "lg_global_px": f"{GLOBAL_HEAD * u:.2f} px", "lg_local": f"{LOCAL_HEAD:g}", "lg_global": f"{GLOBAL_HEAD:g}",
           "lg_heads": str(len(r0.head_distance[0])), "lg_erf_images": str(r0.n_erf_images),
           "lg_uniform_erf": f"{r0.uniform_erf_radius:.1f} px",
           "lg_max_sd": f"{max(statistics.stdev(v) if len(v) > 1 else 0.0 for r in results for w in ('all data', 'less data') for v in _per_head(r.distances(w))):.2f} px",
           "lg_rho": iv(lambda r: r.head_subset_rank_correlation),
           "lg_head_span": iv(lambda r: [max(d) - min(d) for d in r.head_distance], unit=" px"),
           "lg_head_span_ratio": iv(lambda r: [(max(d) - min(d)) / r.uniform_distance for d in r.head_distance]),
           "lg_head_cka_low": iv(lambda r: [min(_mean(layers) for layers in draw) for draw in r.head_cka]),
           "lg_head_cka_high": iv(lambda r: [max(_mean(layers) for layers in draw) for draw in r.head_cka]),
           "lg_erf_radii": "; ".join(f"{name} {iv(lambda r, n=name: r.erf_radius[n], 1, unit=' px')}"
                                     for name in r0.erf_radius),
           "lg_all_vs_less": iv(lambda r: [a / b for a, b in zip(r.block_extremes("all data", 0)[0],
                                                                 r.block_extremes("less data", 0)[0])])}
    out |= r0.ablation_numbers()
    for which, key in (("all data", "all"), ("less data", "less")):
        out[f"lg_{key}_label"] = r0.data_labels[which]
        for block, b in ((0, "b0"), (-1, "last")):
            out[f"lg_{key}_{b}_low"] = iv(lambda r: r.block_extremes(which, block)[0], 1, unit=" px")
            out[f"lg_{key}_{b}_high"] = iv(lambda r: r.block_extremes(which, block)[1], 1, unit=" px")
        out[f"lg_{key}_b0_low_ratio"] = iv(lambda r: [x / r.uniform_distance for x in r.block_extremes(which, 0)[0]])
        out[f"lg_{key}_b0_high_ratio"] = iv(lambda r: [x / r.uniform_distance for x in r.block_extremes(which, 0)[1]])
        out[f"lg_{key}_local_b0"] = _counts([d[0] for r in results for d in r.local_heads(which)])
        out[f"lg_{key}_local_all"] = _counts([sum(d) for r in results for d in r.local_heads(which)])
    return out


@dataclass(frozen=True)
class Params(ChapterParams):
    """The chapter's parameters (see :class:`~vitcnn_utils.chapters.params.ChapterParams` for the common ones).

    Attributes:
        vit, resnet: the models compared (names or model objects); ``vit_small_data``: the same ViT architecture
            trained on less data.
        resnet_low_layers: the ResNet's lower layers (Fig 5's head-subset CKA).
        vit_erf_layers, resnet_erf_layers: low, middle and high layers whose effective receptive fields are shown.
        n_images, batch_size: test images per draw, in minibatches; ``n_erf_images``: images per receptive field.
        ablation_results: the recipe ablation's measurements (``None``: ``vitcnn_utils/zoo/recipe_ablation.json``).
    """
    vit: str | torch.nn.Module = "zoo:vit-cls"
    vit_small_data: str | torch.nn.Module = "zoo:vit-cls-f03"
    resnet: str | torch.nn.Module = "zoo:resnet"
    resnet_low_layers: Sequence[str] = ("maxpool", "layer1.0", "layer2.0", "layer2.1")
    vit_erf_layers: Sequence[str] = ("blocks.0", "blocks.2", "blocks.5")
    resnet_erf_layers: Sequence[str] = ("layer1.0", "layer2.1", "layer4.0")
    n_images: int = 1000
    batch_size: int = 250
    n_erf_images: int = 32
    ablation_results: str | None = None


MODEL_ARGUMENTS = ("vit", "vit_small_data", "resnet")   # run()'s model arguments: swapped for their seed twins (vitcnn_utils.seeds)


def run(params: Params | None = None, **overrides) -> LocalGlobal:
    """Measure the local/global chapter (the notebook's parameters; models are names for
    :func:`vitcnn_utils.models.load_named` or modules). ``ablation_results``: the recipe-ablation JSON
    (default ``vitcnn_utils/zoo/recipe_ablation.json``)."""
    p = Params.resolve(params, overrides)
    names = {"vit": p.vit, "vit_small_data": p.vit_small_data, "resnet": p.resnet}

    def load(x):
        return load_named(x, weights=p.weights, pretrained=p.pretrained, device=p.device) if isinstance(x, str) else x
    vits = {"all data": load(p.vit), "less data": load(p.vit_small_data)}
    res = load(p.resnet)
    resnet_low_layers, vit_erf_layers, resnet_erf_layers = (list(x) for x in (p.resnet_low_layers, p.vit_erf_layers,
                                                                              p.resnet_erf_layers))
    all_draws = image_draws(p)
    erf_draws_ = [dataclasses.replace(d, seed=d.seed + ERF_SEED_OFFSET) for d in all_draws]   # other images
    seeds, erf_seeds = [d.seed for d in all_draws], [d.seed for d in erf_draws_]

    distances = {label: [] for label in vits}
    head_distance, head_cka, rho = [], [], []
    for draw in all_draws:
        batches = draw.images(p.n_images, p.batch_size)
        for label, m in vits.items():
            d, _ = cache.measured(measure.attention_distances, m, batches, device=p.device, enabled=p.use_cache)
            distances[label].append(_nested(d))
        subsets = cache.measured(measure.head_subset_cka, vits["all data"], res, batches, resnet_low_layers,
                                 device=p.device, gram_dtype=p.gram_dtype, enabled=p.use_cache)
        rho.append(attention.rank_correlation(subsets["distance"], subsets["cka"].mean(1)))
        by_head = {heads[0]: i for i, heads in enumerate(subsets["heads"])}          # subsets of one head each
        head_distance.append([subsets["distance"][by_head[h]].item() for h in sorted(by_head)])
        head_cka.append([_nested(subsets["cka"][by_head[h]]) for h in sorted(by_head)])

    erf_layers = [("ViT", vits["all data"], layer) for layer in vit_erf_layers] + \
                 [("ResNet", res, layer) for layer in resnet_erf_layers]
    erf_draws: dict[str, list[torch.Tensor]] = {f"{kind} {layer}": [] for kind, _, layer in erf_layers}
    for draw in erf_draws_:
        images = next(iter(draw.images(p.n_erf_images, p.n_erf_images)))[0]     # one batch (N, C, H, W)
        for kind, model, layer in erf_layers:
            erf_draws[f"{kind} {layer}"].append(cache.measured(
                measure.effective_receptive_field, model, images, layer, device=p.device, enabled=p.use_cache))
    erf_maps = {}
    for name, maps in erf_draws.items():
        mean = torch.stack(maps).mean(0)
        erf_maps[name] = mean / mean.max()
    any_map = next(iter(erf_maps.values()))

    m = vits["all data"]
    entries = {k: getattr(x, "zoo_entry", None) or {} for k, x in
               (("vit", m), ("vit_small_data", vits["less data"]), ("resnet", res))}
    return LocalGlobal(
        n_draws=p.n_draws, n_images=p.n_images, n_erf_images=p.n_erf_images, seeds=seeds, erf_seeds=erf_seeds,
        models={k: v if isinstance(v, str) else type(v).__name__ for k, v in names.items()},
        data_labels={label: _data_label(x, n if isinstance(n, str) else type(n).__name__)
                     for (label, x), n in zip(vits.items(), (p.vit, p.vit_small_data))},
        test_accuracy={k: e.get("test_accuracy") for k, e in entries.items()},
        epochs={k: e.get("epochs") for k, e in entries.items()},
        patch_px=int(m.patch_embed.patch_size[0]), image_px=int(m.patch_embed.patch_size[0] * m.patch_embed.grid_size[0]),
        uniform_distance=measure.uniform_distance(m),
        distances_all_data=distances["all data"], distances_less_data=distances["less data"],
        resnet_low_layers=resnet_low_layers, head_distance=head_distance, head_cka=head_cka,
        head_subset_rank_correlation=rho, vit_erf_layers=vit_erf_layers, resnet_erf_layers=resnet_erf_layers,
        erf_maps=erf_maps, erf_radius={name: [localisation.erf_radius(x) for x in maps] for name, maps in erf_draws.items()},
        uniform_erf_radius=localisation.erf_radius(torch.ones_like(any_map)),
        ablation=read_ablation(p.ablation_results))


# -- the paper's findings this chapter judges (gathered by vitcnn_utils.findings) -------------------------------
# Each rule reads the chapter's record of every training seed (evidence.replicates) and judges intervals.

@dataclass(frozen=True)
class Record(ChapterRecord):
    """What F3–F6 read from the chapter's record. Head distances are ``[draw][block][head]`` in pixels;
    ``erf_radius`` maps ``"<ViT|ResNet> <layer>"`` to the half-mass radius per draw."""
    seeds: list[int]
    uniform_distance: float
    distances_all_data: list[list[list[float]]]
    distances_less_data: list[list[list[float]]]
    head_subset_rank_correlation: list[float]
    erf_radius: dict[str, list[float]]
    uniform_erf_radius: float
    vit_erf_layers: list[str]
    resnet_erf_layers: list[str]

    def erf_radii(self, model: str) -> list[list[float]]:
        """``model``'s ("ViT" or "ResNet") radii per layer, low to high, each a list over draws."""
        layers = {"ViT": self.vit_erf_layers, "ResNet": self.resnet_erf_layers}[model]
        return [self.erf_radius[f"{model} {layer}"] for layer in layers]


def _min_ratio(r: Record, key: str, block: int = 0) -> list[float]:
    """Per draw: the smallest head distance of ``block`` as a fraction of the uniform-attention distance."""
    return [min(draw[block]) / r.uniform_distance for draw in getattr(r, key)]


def _max_ratio(r: Record, key: str, block: int = 0) -> list[float]:
    return [max(draw[block]) / r.uniform_distance for draw in getattr(r, key)]


def _local_precondition(reps, key="distances_all_data") -> Check:
    return check(f"the 100% ViT has a local head in block 0 (its most local head below {LOCAL_HEAD}× the "
                 "uniform-attention distance)", per_seed(reps, lambda r: _min_ratio(r, key)), "<", LOCAL_HEAD,
                 PROJECT + " (the paper calls heads local by eye in Fig 3)")


def _distance_text(reps) -> str:
    lo = interval(per_seed(reps, lambda r: _min_ratio(r, "distances_all_data")))
    hi = interval(per_seed(reps, lambda r: _max_ratio(r, "distances_all_data")))
    return (f"block-0 head distances as a fraction of uniform attention's ({reps[0].uniform_distance:.1f} px): "
            f"most local head {lo.text()}, most global {hi.text()} ({seeds_text(reps)})")


def _f3(v: Record) -> Judgement:
    reps = replicates(v)
    return Judgement(
        _distance_text(reps) + ". No local head in block 0 is what the paper's Fig 4 finds for ViTs trained on "
        "little data (ImageNet instead of JFT): 60,000 images are far less still",
        central=check(f"block 0 has a local head (most local head < {LOCAL_HEAD}× uniform)",
                      per_seed(reps, lambda r: _min_ratio(r, "distances_all_data")), "<", LOCAL_HEAD,
                      PROJECT + " (the paper calls heads local by eye)"),
        direction=False,
        secondary=(check(f"and a global head (most global head > {GLOBAL_HEAD}× uniform)",
                         per_seed(reps, lambda r: _max_ratio(r, "distances_all_data")), ">", GLOBAL_HEAD),
                   check("the last block has no local head",
                         per_seed(reps, lambda r: _min_ratio(r, "distances_all_data", -1)), "≥", LOCAL_HEAD)))


def _f4(v: Record) -> Judgement:
    reps = replicates(v)
    less = per_seed(reps, lambda r: _min_ratio(r, "distances_less_data"))
    more_local = per_seed(reps, lambda r: diff(_min_ratio(r, "distances_less_data"), _min_ratio(r, "distances_all_data")))
    return Judgement(
        f"most local block-0 head, fraction of uniform: {interval(less).text()} with 3% of the data; "
        + _distance_text(reps),
        preconditions=(_local_precondition(reps),),
        central=check("the 3% model's most local block-0 head less local than the 100% model's", more_local, ">", 0.0),
        secondary=(check(f"no local head in the 3% model (≥ {LOCAL_HEAD}× uniform)", less, "≥", LOCAL_HEAD),))


def _f5(v: Record) -> Judgement:
    reps = replicates(v)
    rho = per_seed(reps, lambda r: r.head_subset_rank_correlation)
    return Judgement(
        f"rank correlation of a block-0 head's distance with its CKA to low ResNet layers {interval(rho).text()}; "
        + _distance_text(reps),
        preconditions=(_local_precondition(reps),),
        central=check("rank correlation of block-0 head distance with CKA to low ResNet layers negative", rho, "<",
                      0.0),
        size=(check("≤ −0.5", rho, "≤", -0.5, PROJECT + " of Fig 5"),))


def _f6(v: Record) -> Judgement:
    reps = replicates(v)
    radii = Record.erf_radii
    low = per_seed(reps, lambda r: diff(radii(r, "ViT")[0], radii(r, "ResNet")[0]))
    mid = per_seed(reps, lambda r: diff(radii(r, "ViT")[1], radii(r, "ResNet")[1]))
    steps = [per_seed(reps, lambda r, k=k: diff(radii(r, "ResNet")[k + 1], radii(r, "ResNet")[k]))
             for k in range(len(radii(v, "ResNet")) - 1)]
    uniform = v.uniform_erf_radius
    vit_mid = per_seed(reps, lambda r: [x / uniform for x in draws(radii(r, "ViT")[1])])
    growth = [interval(s) for s in steps]
    state = HOLDS if all(g.low >= 0 for g in growth) else FAILS if any(g.high < 0 for g in growth) else UNDECIDED
    text = lambda model: "; ".join(interval(per_seed(reps, lambda r, k=k: radii(r, model)[k])).text(1)   # noqa: E731
                                   for k in range(len(radii(v, model))))
    return Judgement(
        f"half-mass radius (px), low / mid / high: ViT {text('ViT')} — ResNet {text('ResNet')}; a uniform field "
        f"{uniform:.1f} px ({seeds_text(reps)})",
        central=check("ViT radius above the ResNet's at low depth", low, ">", 0.0, digits=1, unit=" px"),
        secondary=(check("and at mid depth", mid, ">", 0.0, digits=1, unit=" px"),
                   Check("ResNet radius grows with depth", state, "; ".join(g.text(1, unit=" px") for g in growth)),
                   check(f"ViT global by mid-network: mid-depth radius ≥ {GLOBAL_HEAD}× a uniform field's", vit_mid,
                         "≥", GLOBAL_HEAD, PROJECT + " (the same 0.9 as a global head)")))


FINDINGS = (
    Finding(3, "Fig 3", "local_global", "low blocks mix local and global heads; the highest blocks are all global",
            _f3, "local heads may need more data, as the paper's Fig 4 finds; the recipe ablation above tests whether "
                 "a different training recipe is enough at this data scale", record=Record),
    Finding(4, "Fig 4", "local_global", "with less training data, early blocks learn no local heads", _f4,
            "needs a 100% model with local heads", record=Record),
    Finding(5, "Fig 5", "local_global",
            "the more local an early head, the more similar it is to the ResNet's lower layers", _f5,
            "needs heads that span local to global distances", record=Record),
    Finding(6, "Fig 6", "local_global",
            "ViT receptive fields are larger early and global by mid-network; the ResNet's grow gradually", _f6,
            "on a 28-px image the ResNet's receptive field may cover most of the image after two stages", record=Record),
)

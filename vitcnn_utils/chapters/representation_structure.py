"""Chapter "representation structure" (paper section 3, Figs 1–2; findings F1 and F2).

:func:`run` computes, for ``n_draws`` independent draws of analysis images (draw ``d`` uses ``seed + d``), the
minibatch-CKA heatmaps of a ViT and a ResNet at the paper's heatmap layers (:func:`~vitcnn_utils.hooks.
default_layers`: within each model and across them, one joint accumulation: :func:`~vitcnn_utils.cka.
model_heatmaps`) and reads from each draw:

* **F1** (Fig 1): the mean CKA between the lowest and the highest quarter of a model's layers
  (:func:`~vitcnn_utils.cka.band_mean`), on all default layers and on the residual stream alone (the block
  outputs, :func:`~vitcnn_utils.hooks.block_outputs`: a sub-matrix of the same heatmap, no extra forward pass).
* **F2** (Fig 2): for each ViT layer, the ResNet layer most similar to it (:func:`~vitcnn_utils.cka.best_match`);
  the *integer* number of the ViT's lowest-quarter layers whose best match lies in the ResNet's lower half; and
  the highest CKA of any layer of the ViT's last third with any ResNet layer.

Each draw's heatmaps are cached (:func:`vitcnn_utils.cache.measured`: the call, with the draw's images, is the
key), so draw 0 is the plain library call on ``seed``'s images and a rebuild after a text edit is instant.

Two baselines to read those numbers against, both on the first draw's images only (image-draw noise is small
beside what they measure) and cached the same way:

* **Random initialisation** (:func:`init_baseline`, ``init_seeds``): the same F1/F2 numbers for the same
  architectures untrained, rebuilt from the zoo manifest entry (``model.zoo_entry["arch"]``, or the spec of an
  ``arch:`` name) under ``torch.manual_seed(init seed)``: how much of the structure comes from the architecture
  and the input alone. A model with no architecture to rebuild (a timm model) gets ``None``.
* **Seed-to-seed CKA** (:func:`twin_block_cka`, ``vit_twin``/``resnet_twin``): per block output, the CKA of each
  trained model with the same block of its seed twin (same spec, another training seed): the noise floor of
  "similar". The pair is put in a fixed order for the cache key, so the twin run of the chapter
  (:mod:`vitcnn_utils.seeds`, which swaps model and twin) reuses it.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .. import cache, cka, measure, zoo
from ..architectures import build_architecture
from ..hooks import block_outputs
from ..evidence import (PROJECT, ChapterRecord, Finding, Judgement, check, diff, interval, over_seeds, per_seed,
                        replicates, runs_text, seeds_text)
from ..models import load_named
from .params import ChapterParams, draws as image_draws

MODELS = ("ViT", "ResNet")
LOW, HIGH = (0.0, 0.25), (0.75, 1.0)      # the quarters compared by F1 (fractions of a model's layers)
F1_SIZE = 0.1          # F1's size: the ViT's low-vs-high CKA above the ResNet's by at least this
F2_SIZE = 0.75         # F2's size: this share of the ViT's lowest quarter matched in the ResNet's lower half
F2_LAST_THIRD = 0.5    # F2: the ViT's last third "matches no ResNet layer": its highest CKA below this
# (this project's readings of Figs 1-2, which give no number; the chapter's figures draw the same constants)


# The F1/F2 numbers of the random-initialisation baseline: record key -> (draw_summary field, model label or
# None for a number of both models, what the row of the chapter's table says; {q}: the lowest quarter's size).
INIT_FIELDS = {
    "vit_low_high": ("low_high", "ViT", "F1: ViT, lowest vs highest quarter (all layers)"),
    "resnet_low_high": ("low_high", "ResNet", "F1: ResNet, lowest vs highest quarter (all layers)"),
    "vit_low_high_blocks": ("low_high_blocks", "ViT", "F1: ViT, lowest vs highest quarter (block outputs)"),
    "resnet_low_high_blocks": ("low_high_blocks", "ResNet", "F1: ResNet, lowest vs highest quarter (block outputs)"),
    "vit_overall": ("overall", "ViT", "ViT, mean over the whole heatmap"),
    "resnet_overall": ("overall", "ResNet", "ResNet, mean over the whole heatmap"),
    "vit_lowest_quarter_best_in_resnet_lower_half_count":
        ("lowest_quarter_count", None, "F2: ViT lowest-quarter layers matched in the ResNet's lower half (of {q})"),
    "max_cka_vit_last_third": ("max_last_third", None, "F2: highest CKA of the ViT's last third with a ResNet layer"),
    "mean_max_cka_vit_last_third":
        ("mean_max_last_third", None, "F2: mean of the ViT last third's per-layer maxima"),
}
COUNT_FIELDS = {"vit_lowest_quarter_best_in_resnet_lower_half_count"}     # integers


def _span(values) -> str:
    """``0.53`` for one value or equal values, else ``0.41–0.53`` (smallest–largest)."""
    lo, hi = min(values), max(values)
    if f"{lo:.2f}" == f"{hi:.2f}":
        return f"{lo:.2f}"
    return f"{lo:.2f} to {hi:.2f}" if lo < 0 else f"{lo:.2f}–{hi:.2f}"



def lowest_quarter(n_layers: int) -> int:
    """How many layers make up the lowest quarter of ``n_layers`` (at least one; F2)."""
    return max(1, round(n_layers / 4))


def last_third_start(n_layers: int) -> int:
    """Index of the first layer of the last third of ``n_layers`` (F2)."""
    return round(2 * n_layers / 3)


def quarter_slices(n_layers: int) -> tuple[slice, slice]:
    """The layer index ranges :func:`vitcnn_utils.cka.band_mean` averages over for F1: (lowest, highest)
    quarter of ``n_layers``."""
    def rng(frac):
        start = int(frac[0] * n_layers)
        return slice(start, max(start + 1, round(frac[1] * n_layers)))
    return rng(LOW), rng(HIGH)


@dataclass
class RepresentationStructureResult:
    """Everything the chapter plots and reports. Per-draw values are lists (or tensors whose first axis is the
    draw), in draw order; models are labelled :data:`MODELS`.

    Attributes:
        models: label -> the :func:`~vitcnn_utils.models.load_named` name (or the label for a model object).
        n_draws, seeds: the draws and the seed of each (``seed + d``).
        n_images: images per draw (as counted by the CKA accumulation); batch_size: their minibatch size.
        names: label -> the default heatmap layers, in execution order.
        block_names: label -> the block outputs (residual stream) among them.
        within: label -> float64 ``(draws, layers, layers)``: within-model CKA heatmaps.
        cross: float64 ``(draws, ResNet layers, ViT layers)``: ResNet (rows) against ViT (columns).
        low_high, low_high_blocks, overall: label -> ``[per draw]``: mean CKA between the lowest and highest
            quarter of the layers (all default layers / block outputs only), and over the whole heatmap.
        best_match: ``(draws, ViT layers)`` int64: the index of each ViT layer's most similar ResNet layer.
        vit_lowest_quarter_layers, resnet_lower_half_layers: sizes of the two ranges F2 compares (ints).
        vit_lowest_quarter_best_in_resnet_lower_half_count: ``[per draw]`` (ints).
        vit_layers_best_in_resnet_lower_half: ``[per draw]`` (ints), over all ViT layers.
        vit_last_third_start: the first ViT layer index of the last third.
        max_cka_per_vit_layer: float64 ``(draws, ViT layers)``: the highest CKA of each ViT layer with any
            ResNet layer (NaN-safe maximum over the rows of ``cross``).
        max_cka_vit_last_third, mean_max_cka_vit_last_third, max_cka_cross: ``[per draw]``.
        init_baseline: the F1/F2 numbers at random initialisation (:func:`init_baseline`): ``{"init_seeds",
            "seed", "n_images", "architectures": {label: arch dict or None}, <record key>: [per init seed] or
            None}`` with the record keys of :data:`INIT_FIELDS`; ``None`` when no init seeds were asked for.
        twin_cka: the seed-to-seed CKA per block output (:func:`twin_block_cka`): ``{"seed", "n_images",
            "vit": {"twin", "blocks", "cka"} or None, "resnet": ...}`` (and ``"skipped": {key: why}`` for a twin
            of another architecture than its model's); ``None`` when no twin was given.
    """
    models: dict[str, str]
    n_draws: int
    seeds: list[int]
    n_images: int
    batch_size: int
    names: dict[str, list[str]]
    block_names: dict[str, list[str]]
    within: dict[str, torch.Tensor]
    cross: torch.Tensor
    low_high: dict[str, list[float]]
    low_high_blocks: dict[str, list[float]]
    overall: dict[str, list[float]]
    best_match: torch.Tensor
    vit_lowest_quarter_layers: int
    resnet_lower_half_layers: int
    vit_lowest_quarter_best_in_resnet_lower_half_count: list[int]
    vit_layers_best_in_resnet_lower_half: list[int]
    vit_last_third_start: int
    max_cka_per_vit_layer: torch.Tensor
    max_cka_vit_last_third: list[float]
    mean_max_cka_vit_last_third: list[float]
    max_cka_cross: list[float]
    init_baseline: dict | None = None
    twin_cka: dict | None = None

    # -- views the notebook uses ------------------------------------------------------------------------------
    @property
    def n_layers(self) -> dict[str, int]:
        return {label: len(names) for label, names in self.names.items()}

    def mean_within(self, label: str) -> torch.Tensor:
        """The within-model heatmap of ``label`` averaged over the draws (NaNs where every draw is NaN)."""
        return torch.nanmean(self.within[label], 0)

    def mean_cross(self) -> torch.Tensor:
        """The ResNet × ViT heatmap averaged over the draws."""
        return torch.nanmean(self.cross, 0)

    def block_index(self, label: str) -> list[int]:
        """Positions of the block outputs in ``names[label]``."""
        return [self.names[label].index(name) for name in self.block_names[label]]

    def mean_within_blocks(self, label: str) -> torch.Tensor:
        """The within-model heatmap restricted to the block outputs, averaged over the draws."""
        idx = self.block_index(label)
        return self.mean_within(label)[idx][:, idx]

    def low_high_difference(self) -> dict[str, list[float]]:
        """Per draw, the ViT's low-vs-high CKA minus the ResNet's:
        ``{"all layers": [d], "block outputs only": [d]}``."""
        def minus(values):
            return [a - b for a, b in zip(values["ViT"], values["ResNet"])]
        return {"all layers": minus(self.low_high), "block outputs only": minus(self.low_high_blocks)}

    def mean_best_match(self) -> torch.Tensor:
        """Each ViT layer's most similar ResNet layer in the mean heatmap (for the figure's line)."""
        return cka.best_match(self.mean_cross())

    def lowest_quarter_names(self) -> list[str]:
        return self.names["ViT"][:self.vit_lowest_quarter_layers]

    # -- the baselines ------------------------------------------------------------------------------------------
    def init_baseline_rows(self) -> list[tuple[str, str, float, list[float] | None]]:
        """``(record key, what, trained value (mean over the draws), [value per init seed] or None)`` for each
        number of :data:`INIT_FIELDS` (empty when the baseline was not computed)."""
        if self.init_baseline is None:
            return []
        record = self.to_record()
        return [(key, what.format(q=self.vit_lowest_quarter_layers),
                 sum(float(v) for v in record[key]) / len(record[key]), self.init_baseline[key])
                for key, (_, _, what) in INIT_FIELDS.items()]

    def init_baseline_table(self) -> str:
        """Markdown: the F1/F2 numbers of the same architectures at random initialisation, one column per init
        seed (the trained values are in the chapter's text; the prose reading them is in the notebook)."""
        b = self.init_baseline
        if b is None:
            return "*The random-initialisation baseline was not computed (`init_seeds` is empty).*"
        seeds = b["init_seeds"]

        def cell(v, count=False):             # counts as integers
            if v is None:
                return "—"
            return (str(int(v)) if float(v).is_integer() else f"{v:.1f}") if count else f"{v:.2f}"
        lines = ["| untrained | " + " | ".join(f"init seed {s}" for s in seeds) + " |", "|:--|" + "--:|" * len(seeds)]
        for key, what, _, init in self.init_baseline_rows():
            values = init if init is not None else [None] * len(seeds)
            lines.append(f"| {what} | " + " | ".join(cell(v, key in COUNT_FIELDS) for v in values) + " |")
        missing = [label for label, arch in b["architectures"].items() if arch is None]
        if missing:
            lines += ["", f"*{' and '.join(missing)}: no architecture to rebuild (not a zoo or `arch:` model), so "
                          "no random-initialisation values (—).*"]
        return "\n".join(lines)

    def twin_curves(self) -> dict[str, tuple[list[str], list[float]]]:
        """``{"ViT vs <twin>": (block names, CKA per block), ...}`` for the models that have a twin (figure)."""
        if self.twin_cka is None:
            return {}
        return {f"{label} vs {zoo.display_name(t['twin'])}": (t["blocks"], t["cka"])
                for label, t in (("ViT", self.twin_cka["vit"]), ("ResNet", self.twin_cka["resnet"]))
                if t is not None}

    def to_record(self) -> dict:
        """The numbers :func:`vitcnn_utils.findings.record` stores for the conclusion (see the results schema:
        counts as ints, every per-draw value a list over draws; ``init_baseline`` per init seed)."""
        return {
            "n_draws": self.n_draws, "seeds": self.seeds, "n_images": self.n_images,
            "models": self.models, "vit_layers": self.n_layers["ViT"], "resnet_layers": self.n_layers["ResNet"],
            "vit_blocks": len(self.block_names["ViT"]), "resnet_blocks": len(self.block_names["ResNet"]),
            "vit_low_high": self.low_high["ViT"], "resnet_low_high": self.low_high["ResNet"],
            "vit_low_high_blocks": self.low_high_blocks["ViT"],
            "resnet_low_high_blocks": self.low_high_blocks["ResNet"],
            "vit_overall": self.overall["ViT"], "resnet_overall": self.overall["ResNet"],
            "vit_lowest_quarter_best_in_resnet_lower_half_count":
                [int(c) for c in self.vit_lowest_quarter_best_in_resnet_lower_half_count],
            "vit_lowest_quarter_layers": int(self.vit_lowest_quarter_layers),
            "resnet_lower_half_layers": int(self.resnet_lower_half_layers),
            "vit_layers_best_in_resnet_lower_half": [int(c) for c in self.vit_layers_best_in_resnet_lower_half],
            "max_cka_vit_last_third": self.max_cka_vit_last_third,
            "mean_max_cka_vit_last_third": self.mean_max_cka_vit_last_third,
            "max_cka_cross": self.max_cka_cross,
            "init_baseline": self.init_baseline, "twin_cka": self.twin_cka,
        }


def _model(name_or_model, label, weights, pretrained, device) -> tuple[torch.nn.Module, str]:
    if isinstance(name_or_model, torch.nn.Module):
        return name_or_model, label
    return load_named(name_or_model, weights=weights, pretrained=pretrained, device=device), name_or_model


def draw_summary(heatmaps: cka.Heatmaps, block_names: Mapping[str, list[str]]) -> dict:
    """The F1/F2 numbers of one draw's :class:`~vitcnn_utils.cka.Heatmaps` of ``"ViT"`` and ``"ResNet"``."""
    names = heatmaps.names
    out = {"low_high": {}, "low_high_blocks": {}, "overall": {}}
    for label in (m for m in MODELS if m in names):        # one model alone: its F1 numbers only
        matrix = heatmaps[label, label]
        out["low_high"][label] = cka.band_mean(matrix, LOW, HIGH)
        out["overall"][label] = cka.band_mean(matrix, (0, 1), (0, 1))
        idx = [names[label].index(n) for n in block_names[label]]
        out["low_high_blocks"][label] = cka.band_mean(matrix[idx][:, idx], LOW, HIGH)
    if not all(m in names for m in MODELS):
        return out
    cross = heatmaps["ResNet", "ViT"]
    n_res, n_vit = cross.shape
    match = cka.best_match(cross)
    half, quarter, third = n_res // 2, lowest_quarter(n_vit), last_third_start(n_vit)
    top = cross[:, third:]
    out |= {"best_match": match, "max_per_vit_layer": cka.nanmax(cross, 0),
            "lowest_quarter_count": int(((match[:quarter] >= 0) & (match[:quarter] < half)).sum().item()),
            "best_in_lower_half": int(((match >= 0) & (match < half)).sum().item()),   # -1: no defined match
            "max_last_third": cka.nanmax(top), "mean_max_last_third": cka.nanmax(top, 0).mean().item(),
            "max_cross": cka.nanmax(cross)}
    return out



def numbers(results: Sequence[RepresentationStructureResult]) -> dict[str, str]:
    """The numbers the chapter's text inserts (``{glue:text}`` keys), each an interval over every training seed's
    result (``results``: the chapter's own run first, then its seed twins') and its draws, as the verdicts read
    them: ``"0.67 [0.62, 0.71]"``."""
    r0 = results[0]
    q, n_vit, n_res = r0.vit_lowest_quarter_layers, r0.n_layers["ViT"], r0.n_layers["ResNet"]
    out = {"rs_runs": runs_text(len(results), r0.n_draws), "rs_images": f"{r0.n_images:,}",
           "rs_vit_blocks": str(len(r0.block_names["ViT"])), "rs_resnet_blocks": str(len(r0.block_names["ResNet"])),
           "rs_quarter": f"{q} of its {n_vit} layers", "rs_quarter_first": f"{r0.names['ViT'][0]}",
           "rs_quarter_last": f"{r0.names['ViT'][q - 1]}",
           "rs_lower_half": f"{r0.resnet_lower_half_layers} of {n_res}",
           "rs_last_third_first": f"{r0.names['ViT'][r0.vit_last_third_start]}",
           "rs_all_layers_lower_half": over_seeds(results, lambda r: [c / n_vit for c in
                                                                        r.vit_layers_best_in_resnet_lower_half], 0, 100, "%"),
           "rs_max_last_third": over_seeds(results, lambda r: r.max_cka_vit_last_third),
           "rs_mean_max_last_third": over_seeds(results, lambda r: r.mean_max_cka_vit_last_third),
           "rs_max_cross": over_seeds(results, lambda r: r.max_cka_cross)}
    for label in MODELS:
        low = label.lower()
        out[f"rs_{low}_low_high"] = over_seeds(results, lambda r: r.low_high[label])
        out[f"rs_{low}_low_high_blocks"] = over_seeds(results, lambda r: r.low_high_blocks[label])
        out[f"rs_{low}_overall"] = over_seeds(results, lambda r: r.overall[label])
        twins = [t for t in ((r.twin_cka or {}).get(low) for r in results) if t]
        why = ((r0.twin_cka or {}).get("skipped") or {}).get(low, "no twin given")
        out[f"rs_{low}_twin"] = (f"{_span([v for t in twins for v in t['cka']])} over its block outputs (last block "
                                 f"{_span([t['cka'][-1] for t in twins])})" if twins else f"not measured ({why})")
    return out


@dataclass(frozen=True)
class Params(ChapterParams):
    """The chapter's parameters (see :class:`~vitcnn_utils.chapters.params.ChapterParams` for the common ones).

    Attributes:
        vit, resnet: :func:`~vitcnn_utils.models.load_named` names (``zoo:<name>``, ``arch:<name>``, a timm
            model) or model objects.
        n_images, batch_size: test images per draw, in minibatches of ``batch_size``.
        vit_twin, resnet_twin: baselines: each model's seed twin (same spec, training seed 1), compared block by
            block; ``None``: skipped (e.g. for models without a twin).
        init_seeds: baseline: the same architectures at random initialisation with these seeds (empty: skipped).
    """
    vit: str | torch.nn.Module = "zoo:vit-cls"
    resnet: str | torch.nn.Module = "zoo:resnet"
    n_images: int = 2048
    batch_size: int = 256
    vit_twin: str | torch.nn.Module | None = "zoo:vit-cls-s1"
    resnet_twin: str | torch.nn.Module | None = "zoo:resnet-s1"
    init_seeds: Sequence[int] = (0, 1, 2)


MODEL_ARGUMENTS = ("vit", "resnet", "vit_twin", "resnet_twin")   # run()'s model arguments: swapped for their
                                                                  # seed twins (vitcnn_utils.seeds)


def architecture_of(model: torch.nn.Module, name) -> dict | None:
    """The zoo architecture dict that rebuilds ``model`` untrained: its zoo manifest entry's ``"arch"``, or the
    spec of an ``arch:<name>``; ``None`` for anything else (a timm model, a model object without an entry)."""
    entry = getattr(model, "zoo_entry", None) or {}
    arch = entry.get("arch")
    if isinstance(arch, dict):
        return dict(arch)
    if isinstance(arch, str) and arch in zoo.SPECS:          # a zoo spec's name
        return dict(zoo.SPECS[arch].arch)
    if isinstance(name, str) and name.startswith("arch:") and name[len("arch:"):] in zoo.SPECS:
        return dict(zoo.SPECS[name[len("arch:"):]].arch)
    return None


def random_init(arch: dict, init_seed: int, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``build_architecture(arch)`` under ``torch.manual_seed(init_seed)`` (the global RNG is restored after),
    in eval mode on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = build_architecture(arch)
    return model.eval().to(device)


def init_baseline(architectures: Mapping[str, dict | None], init_seeds: Sequence[int], batches,
                  device: str | torch.device = "cpu", use_cache: bool = True, gram_dtype: str = "float64") -> dict:
    """The F1/F2 numbers (:func:`draw_summary`) of the architectures ``{"ViT": arch, "ResNet": arch}`` at
    random initialisation, one heatmap (default layers, as the chapter's) per init seed on ``batches``.

    Each init seed's heatmaps are cached (:func:`~vitcnn_utils.cache.measured`: the randomly initialised models
    and the images are the key), so the twin run of the chapter (same architectures) reuses them. An architecture that is ``None`` leaves its
    numbers ``None`` (and F2's, which need both models).

    Returns:
        ``{"init_seeds", "architectures", <record key of INIT_FIELDS>: [per init seed] or None}``.
    """
    present = [label for label in MODELS if architectures.get(label) is not None]
    out = {"init_seeds": [int(s) for s in init_seeds], "architectures": {m: architectures.get(m) for m in MODELS}}
    values: dict[str, list] = {k: [] for k in INIT_FIELDS}
    for s in out["init_seeds"]:
        if not present:
            break
        models = {label: random_init(architectures[label], s, device) for label in present}
        with warnings.catch_warnings():      # timm zero-initialises each ResNet branch's last BN: constant layers
            warnings.filterwarnings("ignore", message=r".*constant over all", category=UserWarning)
            heatmaps = cache.measured(measure.model_heatmaps, models, batches, device=device, gram_dtype=gram_dtype,
                                      enabled=use_cache)
        summary = draw_summary(heatmaps, {label: block_outputs(m) for label, m in models.items()})
        for k, (field, label, _) in INIT_FIELDS.items():
            got = summary.get(field)
            got = got.get(label) if label is not None and got is not None else got
            values[k].append(got)
    for k, (field, label, _) in INIT_FIELDS.items():
        needs = [label] if label is not None else list(MODELS)
        ok = all(m in present for m in needs) and values[k]
        out[k] = ([int(v) for v in values[k]] if k in COUNT_FIELDS else [float(v) for v in values[k]]) if ok else None
    return out


def twin_block_cka(model: torch.nn.Module, twin: torch.nn.Module, batches, device: str | torch.device = "cpu",
                   use_cache: bool = True, gram_dtype: str = "float64") -> tuple[list[str], list[float]]:
    """CKA of each block output (:func:`~vitcnn_utils.hooks.block_outputs`) of ``model`` with the same block of
    ``twin`` on ``batches``: ``(block names, [CKA per block])``, the diagonal of their cross heatmap.

    The pair is sorted by the models' :func:`~vitcnn_utils.cache.model_key` for the computation and its cache key
    (:func:`~vitcnn_utils.cache.measured`), so ``(a, b)`` and ``(b, a)`` are one computation (CKA is symmetric).

    Raises:
        ValueError: the two models have different block outputs (``twin`` is not the same architecture).
    """
    blocks, twin_blocks = block_outputs(model), block_outputs(twin)
    if blocks != twin_blocks:
        raise ValueError(f"a seed twin must have the same block outputs as its model: {len(blocks)} blocks "
                         f"({', '.join(blocks[:3])}...) against {len(twin_blocks)} ({', '.join(twin_blocks[:3])}...)")
    a, b = sorted((model, twin), key=lambda m: json.dumps(cache.model_key(m), sort_keys=True, default=str))
    heatmaps = cache.measured(measure.model_heatmaps, {"a": a, "b": b}, batches, layers={"a": blocks, "b": blocks},
                              device=device, gram_dtype=gram_dtype, enabled=use_cache)
    return list(blocks), [float(v) for v in torch.diagonal(heatmaps["a", "b"])]


def run(params: Params | None = None, **overrides) -> RepresentationStructureResult:
    """Compute the chapter: the notebook's parameters in, a :class:`RepresentationStructureResult` out.

    ``vit`` and ``resnet`` are :func:`~vitcnn_utils.models.load_named` names or model objects. Draw ``d`` runs
    :func:`~vitcnn_utils.measure.model_heatmaps` on :func:`~vitcnn_utils.data.analysis_batches` with ``seed + d``.

    Baselines, on the first draw's images: ``init_seeds`` (``None`` or empty: skipped) the same architectures at
    random initialisation (:func:`init_baseline`); ``vit_twin`` / ``resnet_twin`` (names or models; ``None``:
    skipped; the notebook passes ``zoo:vit-cls-s1`` and ``zoo:resnet-s1``) each model's seed twin, compared block
    by block (:func:`twin_block_cka`); a twin whose architecture (:func:`architecture_of`) is not its model's
    (a zoo twin beside a timm model) is skipped, with the reason under ``twin_cka["skipped"]``.
    """
    p = Params.resolve(params, overrides)
    models, names_given = {}, {}
    for label, spec in zip(MODELS, (p.vit, p.resnet)):
        models[label], names_given[label] = _model(spec, label, p.weights, p.pretrained, p.device)
    block_names = {label: block_outputs(m) for label, m in models.items()}
    all_draws = image_draws(p)
    seeds = [d.seed for d in all_draws]

    draws, summaries, first_batches = [], [], None
    for draw in all_draws:
        batches = draw.images(p.n_images, p.batch_size)
        heatmaps = cache.measured(measure.model_heatmaps, models, batches, device=p.device, gram_dtype=p.gram_dtype,
                                  enabled=p.use_cache)
        if draws and heatmaps.names != draws[0].names:
            raise RuntimeError("the captured layers differ between draws")
        draws.append(heatmaps)
        summaries.append(draw_summary(heatmaps, block_names))
        first_batches = batches if first_batches is None else first_batches

    baseline = None
    if p.init_seeds:
        architectures = {label: architecture_of(models[label], names_given[label]) for label in MODELS}
        baseline = {**init_baseline(architectures, p.init_seeds, first_batches, p.device, p.use_cache,
                                   p.gram_dtype),
                    "seed": seeds[0], "n_images": draws[0].n_images}
    twins = None
    if p.vit_twin is not None or p.resnet_twin is not None:
        twins = {"seed": seeds[0], "n_images": draws[0].n_images}
        for label, spec in zip(MODELS, (p.vit_twin, p.resnet_twin)):
            if spec is None:
                twins[label.lower()] = None
                continue
            twin_model, twin_name = _model(spec, f"{label} twin", p.weights, p.pretrained, p.device)
            arch, twin_arch = (architecture_of(m, n) for m, n in ((models[label], names_given[label]),
                                                                   (twin_model, twin_name)))
            if arch != twin_arch:                # e.g. the zoo default twin beside a timm model: no twin of it
                twins[label.lower()] = None
                twins.setdefault("skipped", {})[label.lower()] = (
                    f"`{twin_name}` is not the same architecture as `{names_given[label]}`")
                continue
            blocks, values = twin_block_cka(models[label], twin_model, first_batches, p.device, p.use_cache,
                                            p.gram_dtype)
            twins[label.lower()] = {"twin": twin_name, "blocks": blocks, "cka": values}

    names = draws[0].names
    n_vit, n_res = len(names["ViT"]), len(names["ResNet"])

    def per_draw(field, label=None):
        return [s[field][label] if label else s[field] for s in summaries]
    return RepresentationStructureResult(
        models=names_given, n_draws=p.n_draws, seeds=seeds, n_images=draws[0].n_images, batch_size=p.batch_size,
        names={label: list(v) for label, v in names.items()}, block_names=block_names,
        within={label: torch.stack([h[label, label].double() for h in draws]) for label in MODELS},
        cross=torch.stack([h["ResNet", "ViT"].double() for h in draws]),
        low_high={label: per_draw("low_high", label) for label in MODELS},
        low_high_blocks={label: per_draw("low_high_blocks", label) for label in MODELS},
        overall={label: per_draw("overall", label) for label in MODELS},
        best_match=torch.stack(per_draw("best_match")),
        vit_lowest_quarter_layers=lowest_quarter(n_vit), resnet_lower_half_layers=n_res // 2,
        vit_lowest_quarter_best_in_resnet_lower_half_count=per_draw("lowest_quarter_count"),
        vit_layers_best_in_resnet_lower_half=per_draw("best_in_lower_half"),
        vit_last_third_start=last_third_start(n_vit),
        max_cka_per_vit_layer=torch.stack(per_draw("max_per_vit_layer")),
        max_cka_vit_last_third=per_draw("max_last_third"),
        mean_max_cka_vit_last_third=per_draw("mean_max_last_third"),
        max_cka_cross=per_draw("max_cross"), init_baseline=baseline, twin_cka=twins)


# -- the paper's findings this chapter judges (gathered by vitcnn_utils.findings) -------------------------------
# Each rule reads the chapter's record of every training seed (evidence.replicates) and judges intervals.

@dataclass(frozen=True)
class Record(ChapterRecord):
    """What F1–F2 read from the chapter's record (per draw: a list over draws; counts as ints)."""
    seeds: list[int]
    vit_low_high: list[float]
    resnet_low_high: list[float]
    vit_low_high_blocks: list[float]
    resnet_low_high_blocks: list[float]
    vit_lowest_quarter_best_in_resnet_lower_half_count: list[int]
    vit_lowest_quarter_layers: int
    resnet_lower_half_layers: int
    resnet_layers: int
    max_cka_vit_last_third: list[float]


def _f1(v: Record) -> Judgement:
    reps = replicates(v)
    d_all = per_seed(reps, lambda r: diff(r.vit_low_high, r.resnet_low_high))
    d_blocks = per_seed(reps, lambda r: diff(r.vit_low_high_blocks, r.resnet_low_high_blocks))
    vit, res = interval(per_seed(reps, lambda r: r.vit_low_high)), interval(per_seed(reps, lambda r: r.resnet_low_high))
    return Judgement(
        f"mean CKA between the lowest and highest quarter of the layers: ViT {vit.text()}, ResNet {res.text()} "
        f"({seeds_text(reps)})",
        central=check("ViT's low-vs-high CKA above the ResNet's (all layers)", d_all, ">", 0.0),
        size=(check(f"by at least {F1_SIZE:g}", d_all, "≥", F1_SIZE, PROJECT + " of Fig 1 (the paper gives no number)"),),
        secondary=(check("ViT above the ResNet on block outputs only", d_blocks, ">", 0.0),))


def _f2(v: Record) -> Judgement:
    reps = replicates(v)
    total = v.vit_lowest_quarter_layers
    chance = v.resnet_lower_half_layers / v.resnet_layers
    share = per_seed(reps, lambda r: [c / total for c in r.vit_lowest_quarter_best_in_resnet_lower_half_count])
    return Judgement(
        f"share of the ViT's {total} lowest-quarter layers whose best-matching ResNet layer is in the ResNet's lower "
        f"half: {interval(share).text(0, 100, '%')} (a random match: {chance:.0%}); best CKA of the ViT's last "
        f"third with any ResNet layer {interval(per_seed(reps, lambda r: r.max_cka_vit_last_third)).text()} "
        f"({seeds_text(reps)})",
        central=check(f"ViT lowest-quarter layers best matched in the ResNet's lower half: share above a random "
                      f"match's {chance:.0%}", share, ">", chance, digits=0,
                      scale=100, unit="%"),
        size=(check(f"at least {F2_SIZE:.0%} of them", share, "≥", F2_SIZE, PROJECT + " of Fig 2", 0, 100, "%"),),
        secondary=(check(f"the ViT's last third matches no ResNet layer: max CKA < {F2_LAST_THIRD:g}",
                         per_seed(reps, lambda r: r.max_cka_vit_last_third), "<", F2_LAST_THIRD, PROJECT + " of Fig 2"),))


FINDINGS = (
    Finding(1, "Fig 1", "representation_structure",
            "ViT layers are uniformly similar; the ResNet has stages, low and high layers dissimilar", _f1,
            "a 6-block ViT and a 6-unit ResNet have few layers between bottom and top", record=Record),
    Finding(2, "Fig 2", "representation_structure",
            "the ResNet's lower half matches the ViT's lowest quarter; the ViT's last third matches no ResNet layer",
            _f2, "both small networks solve a 10-class task on 28-px images, so their top layers may converge on "
                 "the same class-separating representation", record=Record),
)

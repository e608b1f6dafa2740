"""Chapter "data_scale" (paper section 7, Figs 12–13; findings F11 and F12).

:func:`run` computes, for ``n_draws`` independent draws (draw ``d`` uses ``seed + d`` for its analysis images
and for its probe shots, validation and test images):

* **Block-wise CKA with the 100% model** (Fig 12): minibatch CKA between each block output of a model trained on
  a fraction of the data and the same block of a model trained on all of it
  (:func:`~vitcnn_utils.measure.block_heatmaps`, :func:`~vitcnn_utils.chapters.matched_layer_cka`). The ViT has two
  100% references: the long-schedule model (``vit``, more optimisation steps than the small-data models) and a
  *matched-compute* model (``vit_matched``, trained for as many steps as the small-data models), so that a
  difference between 3% and 100% can be told apart from a difference in training length. A second training seed
  of the long-schedule ViT (``vit_seed``, same spec, seed 1) gives the **seed-to-seed baseline**: the same CKA
  between two models that differ only in their initialisation and batch order.
* **Linear probes on every block** (Fig 13): closed-form ridge probes (:func:`~vitcnn_utils.measure.spatial_probes`)
  read through the same kind of readout for both architectures: the mean of the spatial tokens for the ViT and
  the global average pool for the ResNet; the ViT's CLS token is probed beside it. The second seed is probed
  too: the difference between the two 100% ViTs is the probes' seed-to-seed baseline.

Each draw is cached (:func:`vitcnn_utils.cache.measured`: the call, with the draw's images, is the key): CKA per
draw and architecture, probes per draw and model.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .. import cache, measure, zoo
from ..cka import Heatmaps
from ..evidence import (PAPER, PROJECT, ChapterRecord, Check, Finding, Judgement, check, diff, flag, interval,
                        over_seeds, per_seed, replicates, runs_text, seeds_text)
from ..hooks import middle_index, normalised_depth
from ..models import load_named
from .params import ChapterParams, draws as image_draws

ARCHS = ("ViT", "ResNet")
F11_FIRST_BLOCK = 0.8     # F11: first-block CKA of the least-data ViT with a 100% model at least this (this project's
                          # reading of "already similar", Fig 12; the figure draws it)
FULL, MATCHED = "100%", "100%, matched steps"      # labels of the long-schedule and matched-compute references
SEED = "100%, seed 1"                               # the long-schedule ViT's second training seed (seed baseline)
OTHER = "100%, matched steps, other seed"           # the matched reference's seed twin: F11's seed baseline
SPATIAL, CLS = "spatial", "cls"                     # probe readouts: mean of spatial tokens / GAP, and CLS token


@dataclass
class DataScaleResult:
    """Everything the chapter plots and reports. Per-draw values are tensors whose first axis is the draw.

    Attributes:
        n_draws, seeds: the draws and the seed of each (``seed + d``).
        n_images: test images per draw for the CKA; shots, val_per_class, n_test, num_classes: the probes'.
        model_names: arch -> label -> the model's name (labels: the fractions, least data first, then
            :data:`FULL`, and for the ViT :data:`MATCHED` and :data:`SEED` when those models are given).
        fractions: arch -> the small-data labels, least data first.
        layers: arch -> the CKA layers (layer 0 = embedding / stem, then the block outputs).
        training: arch -> label -> :func:`vitcnn_utils.zoo.training_summary` entry.
        steps: arch -> label -> optimisation steps (:func:`vitcnn_utils.zoo.optimisation_steps`; None for a
            model outside the zoo).
        cka: reference -> label -> float64 ``(draws, layers)``: the CKA of each layer with the same layer of the
            reference, for references ``"vit_long"`` (the ViT's :data:`FULL`), ``"vit_matched"`` (its
            :data:`MATCHED`; absent without a matched model) and ``"resnet"`` (the ResNet's :data:`FULL`).
        probe: arch -> readout (:data:`SPATIAL`; :data:`CLS` for a ViT with a CLS token) -> label -> float64
            ``(draws, blocks)`` test accuracy in [0, 1].
        mid_index, mid_depth: arch -> the block nearest normalised depth 0.5 and its depth.
        readout_names: arch -> readout -> words for the figures.
    """
    n_draws: int
    seeds: list[int]
    n_images: int
    shots: int
    val_per_class: int
    n_test: int
    num_classes: int
    model_names: dict[str, dict[str, str]]
    fractions: dict[str, list[str]]
    layers: dict[str, list[str]]
    training: dict[str, dict[str, dict]]
    steps: dict[str, dict[str, int | None]]
    cka: dict[str, dict[str, torch.Tensor]]
    probe: dict[str, dict[str, dict[str, torch.Tensor]]]
    mid_index: dict[str, int]
    mid_depth: dict[str, float]
    readout_names: dict[str, dict[str, str]]

    # -- views the notebook uses ------------------------------------------------------------------------------
    @property
    def smallest(self) -> dict[str, str]:
        return {arch: labels[0] for arch, labels in self.fractions.items()}

    @property
    def has_matched(self) -> bool:
        return "vit_matched" in self.cka

    @property
    def has_seed(self) -> bool:
        return SEED in self.model_names["ViT"]

    def seed_points(self, readout: str = SPATIAL) -> list[float]:
        """Per draw: mid-network probe of the 100% ViT minus its second seed's, in points."""
        return [100 * (a - b) for a, b in zip(self.mid("ViT", readout, FULL), self.mid("ViT", readout, SEED))]

    @property
    def chance(self) -> float:
        return 1 / self.num_classes

    def blocks(self, arch: str) -> list[str]:
        """The block outputs (the CKA layers without layer 0)."""
        return self.layers[arch][1:]

    def cka_block(self, reference: str, label: str, which: str) -> list[float]:
        """Per draw: CKA of ``label``'s ``which`` (``"first"`` / ``"last"``) block with the reference's."""
        return self.cka[reference][label][:, 1 if which == "first" else -1].tolist()

    def first_minus_last(self, reference: str, label: str) -> list[float]:
        return [a - b for a, b in zip(self.cka_block(reference, label, "first"), self.cka_block(reference, label, "last"))]

    def mid(self, arch: str, readout: str, label: str) -> list[float]:
        """Per draw: the mid-network probe accuracy (in [0, 1])."""
        return self.probe[arch][readout][label][:, self.mid_index[arch]].tolist()

    def gain_points(self, arch: str, readout: str, reference: str = FULL) -> list[float]:
        """Per draw: mid-network probe of ``reference`` minus the smallest-data model's, in points."""
        small = self.smallest[arch]
        return [100 * (a - b) for a, b in zip(self.mid(arch, readout, reference), self.mid(arch, readout, small))]

    def vit_minus_resnet_points(self, readout: str = SPATIAL, reference: str = FULL) -> list[float]:
        """Per draw: mid-network probe, ViT ``reference`` (read through ``readout``) minus ResNet 100% (GAP)."""
        return [100 * (a - b) for a, b in zip(self.mid("ViT", readout, reference), self.mid("ResNet", SPATIAL, FULL))]

    def describe(self, arch: str, label: str) -> str:
        """Words for a model in legends and titles: "3% of the data (1,500 steps)", "100% of the data, 20 epochs
        (9,380 steps)", "100% of the data, 3 epochs (1,407 steps: matched)"."""
        steps, epochs = self.steps[arch].get(label), self.training[arch][label]["epochs"]
        fraction = FULL if label in (MATCHED, SEED, OTHER) else label
        text = f"{fraction} of the data" if fraction.endswith("%") else fraction
        if label in (FULL, MATCHED, SEED, OTHER) and epochs is not None:
            text += f", {epochs} epochs"
        if steps is not None:
            text += (f" ({steps:,} steps{': matched' if label in (MATCHED, OTHER) else ''}"
                     f"{', seed 1' if label == SEED else ', other seed' if label == OTHER else ''})")
        elif label == MATCHED:
            text += " (matched steps)"
        return text

    def legend(self, arch: str) -> dict[str, str]:
        return {label: self.describe(arch, label) for label in self.model_names[arch]}

    def training_table(self) -> str:
        """A Markdown table of the models: training images, epochs, optimisation steps, test accuracy (from the
        zoo's manifest; "not in the zoo" for other models)."""
        lines = ["| architecture | model | name | training images | epochs | steps | test accuracy |",
                 "|---|---|---|---:|---:|---:|---:|"]
        for arch, names in self.model_names.items():
            for label, name in names.items():
                t, steps = self.training[arch][label], self.steps[arch][label]
                if t["test_accuracy"] is None:
                    lines.append(f"| {arch} | {label} | `{name}` | – | – | – | not in the zoo |")
                else:
                    lines.append(f"| {arch} | {label} | `{name}` | {t['train_images']:,} | {t['epochs']} | "
                                 f"{steps:,} | {100 * t['test_accuracy']:.2f}% |")
        return "\n".join(lines)

    # -- what the figures show --------------------------------------------------------------------------------
    def cka_panels(self) -> list[dict]:
        """Fig 12, one panel per 100% reference (the ViT's long-schedule and matched-steps models, the ResNet's):
        ``{"layers", "curves" (label -> (draws, layers)), "title", "legend", "threshold", "low"}`` (``low``: one
        bottom of the y axis for all panels, below F11's threshold and every curve)."""
        refs = [("vit_long", "ViT", FULL)] + ([("vit_matched", "ViT", MATCHED)] if self.has_matched else []) \
            + [("resnet", "ResNet", FULL)]
        low = min(F11_FIRST_BLOCK - 0.05, min(float(v.min()) for per in self.cka.values() for v in per.values()) - 0.03)
        return [{"layers": self.layers[arch], "curves": self.cka[ref], "legend": self.legend(arch), "low": low,
                 "title": f"{arch}: CKA with the model trained on\n{self.describe(arch, label)}",
                 "threshold": (F11_FIRST_BLOCK, f"F11: first block ≥ {F11_FIRST_BLOCK:g} (least data)")
                 if arch == "ViT" else None}
                for ref, arch, label in refs]

    def probe_panels(self) -> list[dict]:
        """Fig 13, one panel per architecture and readout: ``{"curves" (label -> (draws, blocks)), "title",
        "legend", "mid_depth"}``."""
        return [{"curves": per, "legend": self.legend(arch), "mid_depth": self.mid_depth[arch],
                 "title": f"{arch}, {self.readout_names[arch][ro]}\n{self.shots}-shot linear probes, "
                          f"{self.n_test} test images, {self.n_draws} draws"}
                for arch, readouts in self.probe.items() for ro, per in readouts.items()]

    def _cka_record(self, reference: str) -> dict:
        labels = self.fractions["ResNet" if reference == "resnet" else "ViT"]
        return {"cka_first_block": {lb: self.cka_block(reference, lb, "first") for lb in labels},
                "cka_last_block": {lb: self.cka_block(reference, lb, "last") for lb in labels},
                "cka_input": {lb: self.cka[reference][lb][:, 0].tolist() for lb in labels},
                "cka_per_block": {lb: self.cka[reference][lb][:, 1:].tolist() for lb in labels}}

    def to_record(self) -> dict:
        """The numbers :func:`vitcnn_utils.findings.record` stores for the conclusion (see the results schema)."""
        vit_steps, has_cls = self.steps["ViT"], CLS in self.probe["ViT"]
        rec = {
            "n_draws": self.n_draws, "seeds": self.seeds, "n_images": self.n_images, "shots": self.shots,
            "val_per_class": self.val_per_class, "n_test": self.n_test, "num_classes": self.num_classes,
            "smallest_fraction": self.smallest, "models": self.model_names,
            "reference": {"long": self.model_names["ViT"][FULL], "matched": self.model_names["ViT"].get(MATCHED),
                          "long_steps": vit_steps[FULL], "matched_steps": vit_steps.get(MATCHED),
                          "small_steps": {lb: vit_steps[lb] for lb in self.fractions["ViT"]}},
            "steps": self.steps, "training": self.training,
            "vit_long": self._cka_record("vit_long"),
            "vit_matched": self._cka_record("vit_matched") if self.has_matched else None,
            "resnet": self._cka_record("resnet"),
            "cka_long_vs_matched": ({"cka_first_block": self.cka_block("vit_long", MATCHED, "first"),
                                     "cka_last_block": self.cka_block("vit_long", MATCHED, "last")}
                                    if self.has_matched else None),
            "vit_matched_other_seed": ({
                "reference": self.model_names["ViT"][OTHER],
                "baseline": {"model": self.model_names["ViT"][MATCHED],
                             "cka_first_block": self.cka_block("vit_other_seed", MATCHED, "first"),
                             "cka_last_block": self.cka_block("vit_other_seed", MATCHED, "last")},
                "cka": {lb: {"cka_first_block": self.cka_block("vit_other_seed", lb, "first"),
                             "cka_last_block": self.cka_block("vit_other_seed", lb, "last")}
                        for lb in self.fractions["ViT"]}} if "vit_other_seed" in self.cka else None),
            "seed_baseline": ({"model": self.model_names["ViT"][SEED], "reference": self.model_names["ViT"][FULL],
                               "cka_first_block": self.cka_block("vit_long", SEED, "first"),
                               "cka_last_block": self.cka_block("vit_long", SEED, "last"),
                               "cka_per_block": self.cka["vit_long"][SEED][:, 1:].tolist(),
                               "probe_mid_seed0_minus_seed1_points": self.seed_points(SPATIAL),
                               "probe_mid_seed0_minus_seed1_points_cls": self.seed_points(CLS) if has_cls else None}
                              if self.has_seed else None),
            "layers": self.layers, "mid_index": self.mid_index, "mid_depth": self.mid_depth,
            "probe_readout": {"vit": "mean of spatial tokens", "vit_cls": "CLS token" if has_cls else None,
                              "resnet": "global average pool"},
            "probe_per_block": {arch.lower(): {ro: {lb: v.tolist() for lb, v in per.items()} for ro, per in r.items()}
                                for arch, r in self.probe.items()},
            "probe_mid": {arch.lower(): {ro: {lb: self.mid(arch, ro, lb) for lb in per} for ro, per in r.items()}
                          for arch, r in self.probe.items()},
            "probe_mid_gain_points_long": {"vit": self.gain_points("ViT", SPATIAL),
                                           "resnet": self.gain_points("ResNet", SPATIAL)},
            "probe_mid_gain_points_matched": ({"vit": self.gain_points("ViT", SPATIAL, MATCHED)}
                                              if self.has_matched else None),
            "probe_mid_gain_points_long_cls": {"vit": self.gain_points("ViT", CLS)} if has_cls else None,
            "probe_mid_gain_points_matched_cls": ({"vit": self.gain_points("ViT", CLS, MATCHED)}
                                                  if has_cls and self.has_matched else None),
            "probe_mid_vit_minus_resnet_points": self.vit_minus_resnet_points(SPATIAL),
            "probe_mid_vit_minus_resnet_points_cls": self.vit_minus_resnet_points(CLS) if has_cls else None,
            "probe_mid_vit_matched_minus_resnet_points": (self.vit_minus_resnet_points(SPATIAL, MATCHED)
                                                          if self.has_matched else None),
        }
        return rec


def _model(name_or_model, label, weights, pretrained, device):
    if isinstance(name_or_model, torch.nn.Module):
        return name_or_model, label
    return load_named(name_or_model, weights=weights, pretrained=pretrained, device=device), name_or_model


GRAM_STORE = cache.MemoryStore(max_bytes=2 * 2 ** 30)
"""Block Grams kept across :func:`run` calls in one process (the notebook's seed-twin rerun meets
``zoo:vit-cls``, ``-s1``, ``-e3`` and ``-e3-s1`` again): per model and draw, the float64 ``(n, n)`` Gram of each
block layer for each minibatch (with the defaults, a ViT's 7 layers × 4 minibatches × 250² × 8 B ≈ 14 MB),
least recently used out beyond 2 GiB, on the device they were computed on (``device``). Its key (:func:`_block_grams`) covers everything the Grams depend on;
``GRAM_STORE.clear()`` frees it, ``GRAM_STORE.max_bytes = 0`` turns it off (each draw still computes a model's
Grams once)."""


def _block_grams(model: torch.nn.Module, batches, device, gram_dtype: str, draw_grams: dict) -> list:
    """``model``'s :func:`~vitcnn_utils.measure.block_grams` over ``batches`` (a draw's images): from
    ``draw_grams`` (this draw's memo), else :data:`GRAM_STORE`, else computed. The key is the call
    (:func:`~vitcnn_utils.cache.call_key`: the model and its preprocessing, the images, the device, the number of
    threads; the store adds :func:`~vitcnn_utils.cache.code_version`)."""
    spec = cache.call_key(measure.block_grams, model, batches, device=device, gram_dtype=gram_dtype)
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in draw_grams:
        draw_grams[key] = GRAM_STORE.get(spec, lambda: measure.block_grams(model, batches, device=device,
                                                                           gram_dtype=gram_dtype))
    return draw_grams[key]


def group_heatmaps(models: dict[str, torch.nn.Module], batches, device: str | torch.device = "cpu",
                   gram_dtype: str = "float64", draw_grams: dict | None = None) -> Heatmaps:
    """The block heatmaps of ``models`` (:func:`~vitcnn_utils.measure.heatmaps_from_grams`, the same bits as
    :func:`~vitcnn_utils.measure.block_heatmaps`), each model's Grams computed once per draw and process
    (:func:`_block_grams`; ``draw_grams``: the draw's memo, shared by the chapter's CKA groups)."""
    memo = {} if draw_grams is None else draw_grams
    return measure.heatmaps_from_grams({k: _block_grams(m, batches, device, gram_dtype, memo)
                                        for k, m in models.items()}, device=device, gram_dtype=gram_dtype)


def _steps(model) -> int | None:
    entry = getattr(model, "zoo_entry", None)
    return zoo.optimisation_steps(entry) if entry else None



def numbers(results: Sequence[DataScaleResult]) -> dict[str, str]:
    """The numbers the chapter's text inserts (``{glue:text}`` keys): each an interval over every training seed's
    result (``results``: the chapter's own run first, then its seed twins') and its draws (``"0.91 [0.88,
    0.93]"``); ``"not measured"`` where this run has no such model."""
    r0 = results[0]
    small, rsmall = r0.smallest["ViT"], r0.smallest["ResNet"]
    vb, rb = r0.blocks("ViT"), r0.blocks("ResNet")
    pts = dict(digits=1, unit=" points")
    absent = "not measured"

    def iv(quantity, digits=2, scale=1.0, unit=""):
        return over_seeds(results, quantity, digits, scale, unit)
    has_cls = CLS in r0.probe["ViT"]
    out = {"ds_runs": runs_text(len(results), r0.n_draws), "ds_images": f"{r0.n_images:,}", "ds_small": small,
           "ds_shots": str(r0.shots), "ds_vit_first": f"{vb[0]}", "ds_vit_last": f"{vb[-1]}",
           "ds_resnet_first": f"{rb[0]}", "ds_resnet_last": f"{rb[-1]}", "ds_resnet_small": rsmall,
           "ds_long": r0.describe("ViT", FULL),
           "ds_matched": r0.describe("ViT", MATCHED) if r0.has_matched else absent,
           "ds_vit_mid": f"{vb[r0.mid_index['ViT']]} (depth {r0.mid_depth['ViT']:.2f})",
           "ds_resnet_mid": f"{rb[r0.mid_index['ResNet']]} (depth {r0.mid_depth['ResNet']:.2f})",
           "ds_drop_long": iv(lambda r: r.first_minus_last("vit_long", small)),
           "ds_drop_matched": iv(lambda r: r.first_minus_last("vit_matched", small)) if r0.has_matched else absent,
           "ds_long_vs_matched_first": iv(lambda r: r.cka_block("vit_long", MATCHED, "first")) if r0.has_matched else absent,
           "ds_long_vs_matched_last": iv(lambda r: r.cka_block("vit_long", MATCHED, "last")) if r0.has_matched else absent,
           "ds_resnet_small_first": iv(lambda r: r.cka_block("resnet", rsmall, "first")),
           "ds_resnet_small_last": iv(lambda r: r.cka_block("resnet", rsmall, "last")),
           "ds_seed_first": iv(lambda r: r.cka_block("vit_long", SEED, "first")) if r0.has_seed else absent,
           "ds_seed_last": iv(lambda r: r.cka_block("vit_long", SEED, "last")) if r0.has_seed else absent,
           "ds_gain_long": iv(lambda r: r.gain_points("ViT", SPATIAL), **pts),
           "ds_gain_matched": iv(lambda r: r.gain_points("ViT", SPATIAL, MATCHED), **pts) if r0.has_matched else absent,
           "ds_gain_cls": iv(lambda r: r.gain_points("ViT", CLS), **pts) if has_cls else absent,
           "ds_gain_resnet": iv(lambda r: r.gain_points("ResNet", SPATIAL), **pts),
           "ds_vit_minus_resnet": iv(lambda r: r.vit_minus_resnet_points(SPATIAL), **pts),
           "ds_vit_minus_resnet_cls": iv(lambda r: r.vit_minus_resnet_points(CLS), **pts) if has_cls else absent,
           "ds_matched_minus_resnet": (iv(lambda r: r.vit_minus_resnet_points(SPATIAL, MATCHED), **pts)
                                       if r0.has_matched else absent),
           # one pair of models: in the twin run the two seeds swap roles, so only this run's signed difference
           "ds_seed_points": over_seeds([r0], lambda r: r.seed_points(SPATIAL), **pts) if r0.has_seed else absent,
           }
    return out


def cka_table(results: Sequence[DataScaleResult]) -> str:
    """Markdown: first- and last-block CKA of every smaller-data ViT with each 100% reference (intervals over
    training seeds and draws, as :func:`numbers`)."""
    r0 = results[0]
    blocks = r0.blocks("ViT")
    refs = [("vit_long", FULL)] + ([("vit_matched", MATCHED)] if r0.has_matched else [])
    lines = ["| ViT trained on | " + " | ".join(f"vs {r0.describe('ViT', label)}: `{blocks[0]}` | `{blocks[-1]}`"
                                                for _, label in refs) + " |", "|---|" + "---:|---:|" * len(refs)]
    for label in r0.fractions["ViT"]:
        cells = [over_seeds(results, lambda r: r.cka_block(ref, label, w)) for ref, _ in refs for w in ("first", "last")]
        lines.append(f"| {label} of the data | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def probe_table(results: Sequence[DataScaleResult]) -> str:
    """Markdown: the mid-network probe accuracy of every model and readout (intervals over training seeds and
    draws, as :func:`numbers`)."""
    r0 = results[0]
    cols = [("ViT", SPATIAL)] + ([("ViT", CLS)] if CLS in r0.probe["ViT"] else []) + [("ResNet", SPATIAL)]
    lines = ["| training data | " + " | ".join(f"{arch}, {r0.readout_names[arch][ro]}" for arch, ro in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for label in dict.fromkeys([*r0.model_names["ViT"], *r0.model_names["ResNet"]]):
        if label in (OTHER, SEED):      # SEED: over both training seeds, the same two models as FULL
            continue
        cells = [over_seeds(results, lambda r, a=arch, o=ro: r.mid(a, o, label), 1, 100, "%")
                 if label in r0.probe[arch][ro] else "–" for arch, ro in cols]
        lines.append(f"| {label}{' (ViT only)' if label in (MATCHED, SEED) else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Params(ChapterParams):
    """The chapter's parameters (see :class:`~vitcnn_utils.chapters.params.ChapterParams` for the common ones).

    Attributes:
        vit, resnet: trained on all the data (the long-schedule references).
        vit_matched: the ViT trained on all the data for the small-data models' number of steps (``None``: no
            matched reference).
        vit_seed: the long-schedule ViT's second training seed (``None``: no seed baseline).
        vit_matched_seed: the matched reference's other training seed (``None``: none); every small-data model
            and ``vit_matched`` are compared with it by CKA, so the data effect is measured against two
            independently trained 100% models (F11).
        vit_fractions, resnet_fractions: ``{label: model}`` trained on less data, least data first.
        n_images, batch_size: test images per draw for CKA, in minibatches.
        shots: probe training images per class; ``val_per_class``: held-out training images per class (choose the
            regularisation); ``n_test``: probe test images.
    """
    vit: str | torch.nn.Module = "zoo:vit-cls"
    vit_matched: str | torch.nn.Module | None = "zoo:vit-cls-e3"
    resnet: str | torch.nn.Module = "zoo:resnet"
    vit_seed: str | torch.nn.Module | None = "zoo:vit-cls-s1"
    vit_matched_seed: str | torch.nn.Module | None = "zoo:vit-cls-e3-s1"
    vit_fractions: Mapping[str, str | torch.nn.Module] = field(default_factory=lambda: {
        "3%": "zoo:vit-cls-f03", "10%": "zoo:vit-cls-f10", "30%": "zoo:vit-cls-f30"})
    resnet_fractions: Mapping[str, str | torch.nn.Module] = field(default_factory=lambda: {
        "3%": "zoo:resnet-f03", "10%": "zoo:resnet-f10", "30%": "zoo:resnet-f30"})
    n_images: int = 1000
    batch_size: int = 250
    shots: int = 10
    val_per_class: int = 50
    n_test: int = 1000


MODEL_ARGUMENTS = ("vit", "vit_matched", "resnet", "vit_seed", "vit_matched_seed", "vit_fractions", "resnet_fractions")   # run()'s model arguments: swapped for their seed twins (vitcnn_utils.seeds)


def run(params: Params | None = None, **overrides) -> DataScaleResult:
    """Compute the chapter: the notebook's parameters in, a :class:`DataScaleResult` out.

    Models are :func:`~vitcnn_utils.models.load_named` names or models: ``vit`` and ``resnet`` trained on all the
    data (the long-schedule references), ``vit_matched`` the ViT trained on all the data for the small-data
    models' number of steps (``None``: no matched reference), ``vit_seed`` the long-schedule ViT's second training
    seed (``None``: no seed baseline), ``vit_matched_seed`` the matched reference's other training seed (``None``:
    none; every small-data model and ``vit_matched`` are compared with it by CKA, so the data effect is measured
    against two independently trained 100% models: F11), and ``{label: model}`` fractions, least data first (default: the zoo's 3%,
    10% and 30% models).
    """
    p = Params.resolve(params, overrides)
    if not p.vit_fractions or not p.resnet_fractions or {FULL, MATCHED, SEED, OTHER} & (set(p.vit_fractions) | set(p.resnet_fractions)):
        raise ValueError(f"fractions need at least one label each, none of them {FULL!r}, {MATCHED!r}, {SEED!r} or "
                         f"{OTHER!r}")
    if p.vit_matched_seed is not None and p.vit_matched is None:
        raise ValueError("vit_matched_seed is the matched reference's other training seed: give vit_matched too, or "
                         "set vit_matched_seed=None")
    specs = {"ViT": {**p.vit_fractions, FULL: p.vit, **({MATCHED: p.vit_matched} if p.vit_matched is not None else {}),
                     **({SEED: p.vit_seed} if p.vit_seed is not None else {}),
                     **({OTHER: p.vit_matched_seed} if p.vit_matched_seed is not None else {})},
             "ResNet": {**p.resnet_fractions, FULL: p.resnet}}
    models, names = {}, {}
    for arch, group in specs.items():
        models[arch], names[arch] = {}, {}
        for label, spec in group.items():
            models[arch][label], names[arch][label] = _model(spec, f"{arch} {label}", p.weights, p.pretrained,
                                                             p.device)
    num_classes = None              # the data's classes, from the probes' images (a timm head has ImageNet-1k's 1,000)
    has_cls = getattr(models["ViT"][FULL], "num_prefix_tokens", 0) > 0
    readouts = {"ViT": {SPATIAL: "gap_spatial" if has_cls else "gap", **({CLS: "first"} if has_cls else {})},
                "ResNet": {SPATIAL: "gap"}}
    all_draws = image_draws(p)
    seeds = [d.seed for d in all_draws]

    heat = {"vit_long": {}, "vit_matched": {}, "resnet": {}, "vit_other_seed": {}}
    acc = {arch: {ro: {label: [] for label in models[arch] if label != OTHER} for ro in readouts[arch]}
           for arch in ARCHS}
    layers = {}
    for draw in all_draws:
        batches = draw.images(p.n_images, p.batch_size)
        fit, val, test = draw.probe_images(p.shots, p.val_per_class, p.n_test, p.batch_size)
        num_classes = num_classes or measure.count_classes(fit)
        draw_grams: dict[str, list] = {}    # this draw's Grams by key: each model's computed once for all its groups
        for arch, group in models.items():
            # the seed baseline is a separate pair (FULL, SEED), so that the other models' heatmaps stay as they were
            # and so is the other-seed matched reference with the small-data models and the matched reference
            cka_groups = ([{k: m for k, m in group.items() if k not in (SEED, OTHER)}]
                          + ([{FULL: group[FULL], SEED: group[SEED]}] if SEED in group else [])
                          + ([{OTHER: group[OTHER], MATCHED: group[MATCHED], **{k: group[k] for k in p.vit_fractions}}]
                             if OTHER in group else []))
            for g in cka_groups:
                h = cache.measured(group_heatmaps, g, batches, device=p.device, gram_dtype=p.gram_dtype,
                                   enabled=p.use_cache,
                                   unkeyed={"draw_grams": draw_grams})
                layers[arch] = h.names[MATCHED if OTHER in g else FULL]
                refs = ({"resnet": FULL} if arch != "ViT" else {"vit_other_seed": OTHER} if OTHER in g else
                        {"vit_long": FULL, **({"vit_matched": MATCHED} if MATCHED in g else {})})
                for ref, label in refs.items():
                    for other, values in matched_layer_cka(h, label).items():
                        heat[ref].setdefault(other, []).append(values.double())
            aggs = tuple(readouts[arch].values())
            for label, model in group.items():
                if label == OTHER:          # compared by CKA only (its probes would repeat vit_matched's twin's)
                    continue
                result = cache.measured(measure.spatial_probes, model, fit, val, test, num_classes=num_classes,
                                        device=p.device, aggregations=aggs, enabled=p.use_cache)
                for ro, agg in readouts[arch].items():
                    acc[arch][ro][label].append(result.accuracy[agg][:, 0].double())
    for ref in ("vit_matched", "vit_other_seed"):
        if not heat[ref]:
            del heat[ref]
    n_blocks = {arch: len(layers[arch]) - 1 for arch in ARCHS}
    mid = {arch: middle_index(n) for arch, n in n_blocks.items()}
    words = {SPATIAL: "mean of spatial tokens" if has_cls else "mean of all tokens", CLS: "CLS token"}
    return DataScaleResult(
        n_draws=p.n_draws, seeds=seeds, n_images=p.n_images, shots=p.shots, val_per_class=p.val_per_class, n_test=p.n_test,
        num_classes=num_classes, model_names=names,
        fractions={"ViT": list(p.vit_fractions), "ResNet": list(p.resnet_fractions)}, layers=layers,
        training={arch: zoo.training_summary(group) for arch, group in models.items()},
        steps={arch: {label: _steps(m) for label, m in group.items()} for arch, group in models.items()},
        cka={ref: {label: torch.stack(v) for label, v in per.items()} for ref, per in heat.items()},
        probe={arch: {ro: {label: torch.stack(v) for label, v in per.items()} for ro, per in r.items()}
               for arch, r in acc.items()},
        mid_index=mid, mid_depth={arch: normalised_depth(n_blocks[arch])[mid[arch]].item() for arch in ARCHS},
        readout_names={"ViT": {ro: words[ro] for ro in readouts["ViT"]}, "ResNet": {SPATIAL: "global average pool"}})


# -- matched-layer CKA (Fig 12) ----------------------------------------------------------------------------------
def matched_layer_cka(heatmaps: Heatmaps, reference: str) -> dict[str, torch.Tensor]:
    """CKA of each layer of every model in ``heatmaps`` with the *same* layer of ``reference`` (the diagonal
    of ``heatmaps[model, reference]``), for models of one architecture.

    Returns:
        ``{model: (L,) float64}`` for every model except ``reference``, in ``heatmaps.names`` order.

    Raises:
        ValueError: if a model's captured layers differ from the reference's (different architectures).
    """
    if reference not in heatmaps.names:
        raise ValueError(f"no model {reference!r} in the heatmaps; models: {', '.join(heatmaps.names)}")
    ref_layers = heatmaps.names[reference]
    out = {}
    for model, layers in heatmaps.names.items():
        if model == reference:
            continue
        if layers != ref_layers:
            raise ValueError(f"model {model!r} has layers {layers[:3]}... ({len(layers)}), the reference "
                             f"{reference!r} {ref_layers[:3]}... ({len(ref_layers)}): matched-layer CKA needs "
                             "the same architecture")
        out[model] = heatmaps[model, reference].diagonal().clone()
    return out


# -- the paper's findings this chapter judges (gathered by vitcnn_utils.findings) -------------------------------
# Each rule reads the chapter's record of every training seed (evidence.replicates) and judges intervals.

@dataclass(frozen=True)
class StepsReference:
    """The 100% ViTs the small-data ones are compared with, and every model's optimisation steps (``None``:
    an untrained model)."""
    long: str
    matched: str | None
    long_steps: int | None
    matched_steps: int | None
    small_steps: dict[str, int | None]


@dataclass(frozen=True)
class BlockCka:
    """CKA at the first and last block, a list over draws."""
    cka_first_block: list[float]
    cka_last_block: list[float]


@dataclass(frozen=True)
class OtherSeedCka:
    """CKA with the matched 100% ViT of the other training seed: of the seed baseline (another 100% ViT) and
    of each small-data ViT (by fraction label)."""
    baseline: BlockCka
    cka: dict[str, BlockCka]


@dataclass(frozen=True)
class Trained:
    test_accuracy: float | None


@dataclass(frozen=True)
class Record(ChapterRecord):
    """What F11–F12 read from the chapter's record (per draw: a list over draws; probe values in points).
    ``models``, ``training``: per architecture ("ViT", "ResNet"), per fraction label."""
    seeds: list[int]
    smallest_fraction: dict[str, str]
    models: dict[str, dict[str, str]]
    training: dict[str, dict[str, Trained | None]]
    reference: StepsReference
    vit_matched_other_seed: OtherSeedCka | None
    probe_mid_gain_points_long: dict[str, list[float]]
    probe_mid_gain_points_matched: dict[str, list[float]] | None
    probe_mid_vit_minus_resnet_points: list[float]


def _steps_control(v: Record) -> Check:
    ref = v.reference
    small = set(ref.small_steps.values())
    known = None not in small and ref.matched_steps is not None   # untrained (arch:) models have no steps
    matched = ref.matched is not None and known
    close = matched and all(abs(s - ref.matched_steps) <= 0.1 * ref.matched_steps for s in small)
    small = sorted(str(s) for s in small)
    return flag("a 100% reference trained with the small-data models' optimisation steps (within 10%)", close,
                f"reference {ref.matched or ref.long} {ref.matched_steps or ref.long_steps} steps; "
                f"small-data models {', '.join(small)}")


def _accuracy_control(reps: list[Record]) -> Check:
    """More data must not lower test accuracy at the matched budget: if the matched 100% model is below a
    small-data model, its steps, not its data, limit it, and a data comparison at that budget is confounded."""
    rows = []
    for r in reps:
        acc = {label: e.test_accuracy if e else None for label, e in r.training["ViT"].items()}
        ref = r.reference.matched
        matched_label = next((lb for lb, name in r.models["ViT"].items() if name == ref), None)
        small = {lb: acc.get(lb) for lb in r.reference.small_steps}
        rows.append((acc.get(matched_label), small))
    known = all(m is not None and None not in s.values() for m, s in rows)
    ok = known and all(all(m >= a for a in s.values()) for m, s in rows)
    value = "; ".join(f"matched 100% {m:.1%} vs " + ", ".join(f"{lb} {a:.1%}" for lb, a in s.items())
                      for m, s in rows) if known else "test accuracies unknown (untrained models)"
    return flag("the matched-compute 100% model at least as accurate as every small-data model (else its steps, "
                "not its data, limit it)", ok, value)


def _f11(v: Record) -> Judgement:
    reps = replicates(v)
    small = v.smallest_fraction["ViT"]
    if any(r.vit_matched_other_seed is None for r in reps):
        return Judgement("no second training seed of the matched-compute 100% ViT in this run",
                         not_measured="a data effect needs the CKA of two 100% ViTs (seed baseline) beside the "
                                      "small-data model's")

    def effect(r, block):   # seed baseline minus small-data model, both against the other seed's 100% model
        o, attr = r.vit_matched_other_seed, f"cka_{block}_block"
        return diff(getattr(o.baseline, attr), getattr(o.cka[small], attr))
    last = per_seed(reps, lambda r: effect(r, "last"))
    grows = per_seed(reps, lambda r: diff(effect(r, "last"), effect(r, "first")))
    first_small = per_seed(reps, lambda r: r.vit_matched_other_seed.cka[small].cka_first_block)
    t = lambda f: interval(per_seed(reps, lambda r: f(r.vit_matched_other_seed))).text()   # noqa: E731
    return Judgement(
        f"CKA with a 100% ViT of the other training seed (matched compute), first / last block: the {small} model "
        f"{t(lambda o: o.cka[small].cka_first_block)} / {t(lambda o: o.cka[small].cka_last_block)}; "
        f"another 100% model (seed baseline) {t(lambda o: o.baseline.cka_first_block)} / "
        f"{t(lambda o: o.baseline.cka_last_block)} ({seeds_text(reps)})",
        controls=(_steps_control(v),),
        central=check(f"at the last block, the {small} model less similar to a 100% model than another 100% model is",
                      last, ">", 0.0),
        secondary=(check(f"first-block CKA of the {small} model ≥ {F11_FIRST_BLOCK:g}", first_small, "≥",
                         F11_FIRST_BLOCK, PROJECT + " of “already similar” (Fig 12)"),
                   check("the data effect larger at the last block than at the first", grows, ">", 0.0)))


def _f12(v: Record) -> Judgement:
    reps = replicates(v)
    small = v.smallest_fraction["ViT"]
    if v.probe_mid_gain_points_matched is None:
        return Judgement("no matched-compute 100% ViT in this run",
                         not_measured="a data effect at matched compute needs a 100% ViT trained for the small-data "
                                      "models' steps")
    gain = per_seed(reps, lambda r: r.probe_mid_gain_points_matched["vit"])
    same = per_seed(reps, lambda r: r.probe_mid_vit_minus_resnet_points)
    return Judgement(
        f"mid-network probe, 100% minus {small} model at matched compute: {interval(gain).text(1, unit=' points')} "
        f"(long-schedule 100% model: {interval(per_seed(reps, lambda r: r.probe_mid_gain_points_long['vit'])).text(1, unit=' points')}); "
        f"ViT minus ResNet at 100%, same readout {interval(same).text(1, unit=' points')} ({seeds_text(reps)})",
        controls=(_steps_control(v), _accuracy_control(reps)),
        central=check("mid-network probe better at 100% than at the smallest fraction", gain, ">", 0.0, digits=1,
                      unit=" points"),
        size=(check("by about the paper's 30 points (≥ 30)", gain, "≥", 30.0, PAPER + " (Fig 13: ~30% absolute)", 1,
                    unit=" points"),),
        secondary=(check("ViT above the ResNet at 100% through the same readout", same, ">", 0.0, digits=1, unit=" points"),))


FINDINGS = (
    Finding(11, "Fig 12", "data_scale", "low layers are already similar with 3–10% of the data; high layers need much "
            "more", _f11, "our fractions are of 60,000 images (1,800 at 3%), not of 300 million", record=Record),
    Finding(12, "Fig 13", "data_scale",
            "more data gives much stronger intermediate layers; ViTs stronger than ResNets mid-network", _f12,
            "the paper compares 300M vs 1.3M images; our largest/smallest ratio is 33×", record=Record),
)

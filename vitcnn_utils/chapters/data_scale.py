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

Each draw is cached (:func:`vitcnn_utils.cache.cached`, the draw's seed in the key): CKA per draw and
architecture, probes per draw and model.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .. import cache, measure, zoo
from ..cka import Heatmaps
from .. import data as vdata
from ..findings import F11_FIRST_BLOCK, fmt, pct
from ..hooks import block_layers, middle_index, normalised_depth
from ..models import load_named
from .params import ChapterParams

ARCHS = ("ViT", "ResNet")
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

    # -- the chapter's "Measured" paragraphs ---------------------------------------------------------------
    def _draws_note(self, what: str) -> str:
        return (f"{self.n_draws} draws of {what}; a number reads mean ± SD over the draws (range, n)" if self.n_draws > 1
                else f"1 draw of {what}")

    def measured_cka(self) -> str:
        """Fig 12 text: first- and last-block CKA of every smaller-data model with both 100% references."""
        blocks = self.blocks("ViT")
        refs = [("vit_long", FULL)] + ([("vit_matched", MATCHED)] if self.has_matched else [])
        head = "| ViT trained on | " + " | ".join(
            f"vs {self.describe('ViT', label)}: {blocks[0]} | {blocks[-1]}" for _, label in refs) + " |"
        lines = [f"**Measured** ({self._draws_note(f'{self.n_images} test images')}). CKA of a block with the same "
                 f"block of a ViT trained on all the data, first block ({blocks[0]}) and last block ({blocks[-1]}):",
                 "", head, "|---|" + "---:|---:|" * len(refs)]
        for label in self.fractions["ViT"]:
            cells = [f"{fmt(self.cka_block(ref, label, w))}" for ref, _ in refs for w in ("first", "last")]
            lines.append(f"| {label} of the data | " + " | ".join(cells) + " |")
        small = self.smallest["ViT"]
        lines.append("")
        drops = "; ".join(f"against the model trained on {self.describe('ViT', label)} "
                          f"**{fmt(self.first_minus_last(ref, small))}**"
                          for ref, label in refs)
        lines.append(f"With the least data ({small}), first block minus last block: {drops}.")
        if self.has_matched:
            lines.append(f"The two 100% ViTs themselves (same data, {self.training['ViT'][FULL]['epochs']} against "
                         f"{self.training['ViT'][MATCHED]['epochs']} epochs): CKA {fmt(self.cka_block('vit_long', MATCHED, 'first'))} "
                         f"at the first block, {fmt(self.cka_block('vit_long', MATCHED, 'last'))} at the last — how far "
                         "the training schedule alone moves the top block.")
        rb = self.blocks("ResNet")
        rsmall = self.smallest["ResNet"]
        lines.append(f"ResNet against its model trained on {self.describe('ResNet', FULL)}: trained on {rsmall}, "
                     f"{fmt(self.cka_block('resnet', rsmall, 'first'))} at {rb[0]} and "
                     f"{fmt(self.cka_block('resnet', rsmall, 'last'))} at {rb[-1]}.")
        if self.has_seed:
            lines.append(f"\n**Seed-to-seed baseline.** Two 100% ViTs that differ only in their training seed "
                         f"(`{self.model_names['ViT'][FULL]}` and `{self.model_names['ViT'][SEED]}`): CKA "
                         f"**{fmt(self.cka_block('vit_long', SEED, 'first'))}** at the first block and "
                         f"**{fmt(self.cka_block('vit_long', SEED, 'last'))}** at the last. A gap between the "
                         f"{small} model and the 100% model is a data effect only where it is larger than this. The small-data "
                         f"models start from the same seeded initialisation as the seed-0 100% models, the seed-1 model "
                         f"does not; how much of their similarity that shared start explains is not measured here.")
        else:
            lines.append("\nA seed-to-seed baseline (the same CKA between two 100% ViTs that differ only in their "
                         "training seed) is not measured in this run (no `vit_seed` model was given).")
        lines.append("The paper: the lower blocks are already similar to the full-data model with 3–10% of the data "
                     "while the higher blocks need much more data.")
        return "\n".join(lines)

    def measured_probes(self) -> str:
        """Fig 13 text: mid-network probe accuracies, the gains from more data, and ViT against ResNet."""
        has_cls = CLS in self.probe["ViT"]
        vb, rb = self.blocks("ViT"), self.blocks("ResNet")
        cols = [("ViT", SPATIAL)] + ([("ViT", CLS)] if has_cls else []) + [("ResNet", SPATIAL)]
        head = "| training data | " + " | ".join(f"{arch}, {self.readout_names[arch][ro]}" for arch, ro in cols) + " |"
        lines = [f"**Measured** ({self.shots}-shot probes; {self._draws_note('probe shots and test images')}). "
                 f"Mid-network block (nearest normalised depth 0.5): ViT {vb[self.mid_index['ViT']]} (depth "
                 f"{self.mid_depth['ViT']:.2f}), ResNet {rb[self.mid_index['ResNet']]} (depth "
                 f"{self.mid_depth['ResNet']:.2f}); test accuracy:", "", head, "|---|" + "---:|" * len(cols)]
        for label in dict.fromkeys([*self.model_names["ViT"], *self.model_names["ResNet"]]):
            cells = [pct(self.mid(arch, ro, label)) if label in self.probe[arch][ro] else "–" for arch, ro in cols]
            lines.append(f"| {label}{' (ViT only)' if label in (MATCHED, SEED) else ''} | " + " | ".join(cells) + " |")
        steps = {arch: ", ".join(f"{lb} {s:,}" for lb, s in self.steps[arch].items() if s is not None)
                 for arch in ARCHS}
        if all(steps.values()):
            lines += ["", f"Optimisation steps: ViT {steps['ViT']}; ResNet {steps['ResNet']}."]
        small = self.smallest["ViT"]
        pts = dict(digits=1, unit=" points")
        gains = [f"ViT ({self.readout_names['ViT'][SPATIAL]}) **{fmt(self.gain_points('ViT', SPATIAL), **pts)}** "
                 "against the long-schedule model"]
        if self.has_matched:
            gains.append(f"**{fmt(self.gain_points('ViT', SPATIAL, MATCHED), **pts)}** against the matched-steps model")
        if has_cls:
            gains.append(f"through the CLS token {fmt(self.gain_points('ViT', CLS), **pts)} (long)"
                         + (f", {fmt(self.gain_points('ViT', CLS, MATCHED), **pts)} (matched)" if self.has_matched else ""))
        gains.append(f"ResNet {fmt(self.gain_points('ResNet', SPATIAL), **pts)}")
        same = self.vit_minus_resnet_points(SPATIAL)
        above = sum(x > 0 for x in same)
        lines += ["", f"Trained on 100% rather than {small} of the data, the mid-network probe gains: "
                  + "; ".join(gains) + ".",
                  f"ViT minus ResNet at 100% of the data, mid-network, through the same readout (mean of the ViT's "
                  f"spatial tokens against the ResNet's global average pool): **{fmt(same, **pts)}** (ViT above in "
                  f"{above} of {len(same)} draws)"
                  + (f"; through the ViT's CLS token {fmt(self.vit_minus_resnet_points(CLS), **pts)}" if has_cls else "")
                  + (f"; the matched-steps ViT {fmt(self.vit_minus_resnet_points(SPATIAL, MATCHED), **pts)}"
                     if self.has_matched else "") + ".",
                  (f"\n**Seed-to-seed baseline.** The two 100% ViTs (seeds 0 and 1), mid-network: seed 0 minus seed 1 "
                   f"**{fmt(self.seed_points(SPATIAL), **pts)}** ({self.readout_names['ViT'][SPATIAL]})"
                   + (f", {fmt(self.seed_points(CLS), **pts)} (CLS token)" if has_cls else "")
                   + ": differences of this size appear between two identically trained models."
                   if self.has_seed else "\nNo second training seed was given, so the probes' seed-to-seed spread is "
                   "not measured in this run."),
                  "\nThe paper: more pretraining data makes the intermediate layers much stronger (about 30 points "
                  "mid-network), and large ViTs have stronger intermediate representations than ResNets."]
        return "\n".join(lines)

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


def _block_grams(draw_grams: dict, draw: dict, fingerprint: dict, model: torch.nn.Module, batches,
                 device) -> list:
    """``model``'s :func:`~vitcnn_utils.measure.block_grams` over this draw's ``batches``: from ``draw_grams``
    (this draw's), else :data:`GRAM_STORE`, else computed. ``draw`` is the draw's data key, seed, image size,
    batch size and number of images, ``fingerprint`` the model's :func:`~vitcnn_utils.cache.model_fingerprint`;
    the key adds its preprocessing, the layers, the Gram dtype, the device and the number of threads (and the
    store adds :func:`~vitcnn_utils.cache.code_version`)."""
    inner = vdata._input_module(model) or model
    spec = {"draw": draw, "model": fingerprint, "layers": block_layers(model, True), "gram_dtype": "float64",
            "input": {"vitcnn_input": getattr(inner, "vitcnn_input", None),
                      "pretrained_cfg": getattr(inner, "pretrained_cfg", None)},
            "device": str(torch.device(device)), "threads": torch.get_num_threads()}
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in draw_grams:
        draw_grams[key] = GRAM_STORE.get(spec, lambda: measure.block_grams(model, batches, device=device))
    return draw_grams[key]


def _steps(model) -> int | None:
    entry = getattr(model, "zoo_entry", None)
    return zoo.optimisation_steps(entry) if entry else None



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
    models, names, prints = {}, {}, {}
    for arch, group in specs.items():
        models[arch], names[arch], prints[arch] = {}, {}, {}
        for label, spec in group.items():
            m, name = _model(spec, f"{arch} {label}", p.weights, p.pretrained, p.device)
            models[arch][label], names[arch][label] = m, name
            prints[arch][label] = cache.model_fingerprint(m, name)
    data_key = cache.data_fingerprint(p.data, p.data_dir)          # the data's location and files, in every key
    num_classes = None              # the data's classes, from the probes' images (a timm head has ImageNet-1k's 1,000)
    has_cls = getattr(models["ViT"][FULL], "num_prefix_tokens", 0) > 0
    readouts = {"ViT": {SPATIAL: "gap_spatial" if has_cls else "gap", **({CLS: "first"} if has_cls else {})},
                "ResNet": {SPATIAL: "gap"}}
    seeds = [p.seed + d for d in range(p.n_draws)]

    heat = {"vit_long": {}, "vit_matched": {}, "resnet": {}, "vit_other_seed": {}}
    acc = {arch: {ro: {label: [] for label in models[arch] if label != OTHER} for ro in readouts[arch]}
           for arch in ARCHS}
    layers = {}
    for s in seeds:
        batches = vdata.analysis_batches(p.data, p.n_images, p.batch_size, seed=s, data_dir=p.data_dir, image_size=p.image_size)
        fit, val, test = vdata.probe_batches(p.data, p.shots, p.val_per_class, p.n_test, p.batch_size, seed=s,
                                             data_dir=p.data_dir, image_size=p.image_size)
        num_classes = num_classes or measure.count_classes(fit)
        base = {"data": data_key, "seed": s, "image_size": p.image_size, "batch": p.batch_size}
        draw_grams: dict[str, list] = {}    # this draw's Grams by key: each model's computed once for all its groups
        for arch, group in models.items():
            # the seed baseline is a separate pair (FULL, SEED), so that the other models' heatmaps stay as they were
            # and so is the other-seed matched reference with the small-data models and the matched reference
            cka_groups = ([{k: m for k, m in group.items() if k not in (SEED, OTHER)}]
                          + ([{FULL: group[FULL], SEED: group[SEED]}] if SEED in group else [])
                          + ([{OTHER: group[OTHER], MATCHED: group[MATCHED], **{k: group[k] for k in p.vit_fractions}}]
                             if OTHER in group else []))
            for g in cka_groups:
                h = cache.cached("data-scale-cka", {**base, "n": p.n_images, "models": [prints[arch][k] for k in g]},
                                 lambda g=g, arch=arch: measure.heatmaps_from_grams(
                                     {k: _block_grams(draw_grams, {**base, "n": p.n_images}, prints[arch][k], m,
                                                      batches, p.device) for k, m in g.items()}, device=p.device),
                                 p.use_cache)
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
                result = cache.cached(
                    "data-scale-block-probes", {**base, "shots": p.shots, "val": p.val_per_class, "n_test": p.n_test,
                                                "aggregations": list(aggs), "model": prints[arch][label]},
                    lambda model=model, aggs=aggs: measure.spatial_probes(model, fit, val, test, num_classes=num_classes,
                                                                         device=p.device, aggregations=aggs),
                    p.use_cache)
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

"""Chapter "skip connections" (paper section 5, Figs 7–8; findings F7 and F8).

:func:`run` computes, for ``n_draws`` independent draws of analysis images (draw ``d`` uses ``seed + d``):

* **Skip ratios** (Fig 7, F7) of the trained ViT ``vit`` (the long-schedule CLS model) and the ResNet: the ratio
  ‖z‖/‖f(z)‖ per residual sublayer and token (:func:`~vitcnn_utils.measure.vit_skip_ratios`) and per bottleneck
  unit (:func:`~vitcnn_utils.measure.resnet_skip_ratios`), summarised per draw by
  :func:`~vitcnn_utils.chapters.skip_ratio_summary` (means over each half of the sublayers, medians).
* **ViTs without the skips of one block** (Fig 8, F8): the within-model CKA heatmaps of the matched control
  ``vit_control`` (the intact ViT trained with exactly the no-skip models' recipe), of the long ViT ``vit`` and
  of every ``vit_no_skip`` model (one joint :func:`~vitcnn_utils.measure.model_heatmaps` accumulation), their top-1
  accuracies on the draw's images (from the heatmaps' forward pass, :func:`~vitcnn_utils.measure.heatmaps_with_accuracy`:
  the values of :func:`~vitcnn_utils.train.model_accuracies`), and per no-skip model
  (:func:`~vitcnn_utils.chapters.no_skip_comparison`) the mean CKA across the removed block and the accuracy drop,
  both against the control. The long ViT's split CKA and accuracy are reported beside (not used by F8 unless
  there is no control, ``vit_control=None``).

Optimisation steps come from the zoo manifest (:func:`~vitcnn_utils.zoo.optimisation_steps`; ``None`` for models
without an entry). Each draw's computations are cached (:func:`vitcnn_utils.cache.measured`: the call, with the
draw's images, is the key), so draw 0 is the plain library call on ``seed``'s images and a rebuild after a text edit is instant.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import cache, measure
from ..architectures import removed_blocks
from ..hooks import normalised_depth
from ..skips import ratio_profile, split_contrast, split_summary
from .. import evidence
from ..models import load_named
from ..zoo import display_name, optimisation_steps
from .params import ChapterParams, draws as image_draws
from ..evidence import (PAPER, PROJECT, ChapterRecord, Finding, Judgement, check, diff, draws, flag, interval,
                        per_seed, replicates, seeds_text)

F8_ACCURACY_DROP = 0.02   # F8's size: accuracy lost at the middle block (fraction; the paper: about 4%)
F7_MEDIAN_TIMES = 2.0     # F7's size: the ViT's median skip ratio this many times the ResNet's (reading of "far above")
RATIO_FIELDS = ("cls_ratio_first_half", "spatial_ratio_first_half", "cls_ratio_second_half",
                "spatial_ratio_second_half", "vit_median_ratio", "vit_max_ratio", "vit_min_ratio",
                "resnet_median_ratio", "resnet_max_ratio", "resnet_min_ratio")



def _scaled(values, scale: float = 100.0) -> list[float]:
    return [scale * v for v in values]


@dataclass
class ModelInfo:
    """A model's name and what it was trained with (from its zoo manifest entry; ``None`` without one)."""
    name: str
    steps: int | None
    epochs: int | None
    test_accuracy: float | None

    @classmethod
    def of(cls, model: torch.nn.Module, name: str) -> "ModelInfo":
        entry = getattr(model, "zoo_entry", None)
        if entry is None:
            return cls(name, None, None, None)
        return cls(name, optimisation_steps(entry), int(entry["epochs"]), float(entry["test_accuracy"]))

    def to_record(self) -> dict:
        return {"name": self.name, "steps": self.steps, "epochs": self.epochs, "test_accuracy": self.test_accuracy}


@dataclass
class NoSkipRow:
    """One ViT retrained without both skips of one block, against the intact control (lists over draws).

    Attributes:
        model: the no-skip model and its training (``steps`` from the zoo manifest).
        block, depth_fraction: the block without skips and its normalised depth (block / (blocks − 1)).
        split_cka_intact: mean CKA across the block (:func:`~vitcnn_utils.split_contrast`) in the control.
        split_cka_long: the same in the long ViT (reference).
        split_cka_no_skip: the same in the no-skip model; within_before_no_skip / within_after_no_skip: mean CKA
            within the layers below / above the block in the no-skip model (NaN for a side of one layer).
        accuracy_intact, accuracy_no_skip: top-1 on the draw's images (control, no-skip model).
        accuracy_drop: control minus no-skip (fraction); accuracy_drop_long: long ViT minus no-skip.
    """
    model: ModelInfo
    block: int
    depth_fraction: float
    split_cka_intact: list[float]
    split_cka_long: list[float]
    split_cka_no_skip: list[float]
    within_before_no_skip: list[float]
    within_after_no_skip: list[float]
    accuracy_intact: list[float]
    accuracy_no_skip: list[float]
    accuracy_drop: list[float]
    accuracy_drop_long: list[float]

    @property
    def label(self) -> str:
        return self.model.name

    def to_record(self) -> dict:
        return {"label": self.label, "block": self.block, "depth_fraction": self.depth_fraction,
                "steps": self.model.steps, "epochs": self.model.epochs, "test_accuracy": self.model.test_accuracy,
                "split_cka_intact": self.split_cka_intact, "split_cka_no_skip": self.split_cka_no_skip,
                "split_cka_long": self.split_cka_long,
                "within_before_no_skip": self.within_before_no_skip, "within_after_no_skip": self.within_after_no_skip,
                "accuracy_intact": self.accuracy_intact, "accuracy_no_skip": self.accuracy_no_skip,
                "accuracy_drop": self.accuracy_drop, "accuracy_drop_long": self.accuracy_drop_long}


@dataclass
class SkipConnectionsResult:
    """Everything the chapter plots and reports. Per-draw values are lists (or tensors whose first axis is the
    draw), in draw order.

    Attributes:
        vit, resnet: the long ViT (skip ratios, reference for Fig 8) and the ResNet.
        control: the matched intact ViT for Fig 8, or ``None`` (then ``vit`` is the intact reference).
        n_draws, seeds, n_images, batch_size: the draws (``seed + d``), images per draw, minibatch size.
        num_prefix_tokens: leading non-patch tokens of ``vit`` (1: token 0 is the CLS token).
        sublayers: the ViT's residual sublayers (rows of ``vit_ratios``); units: the ResNet's bottleneck units.
        vit_ratios: float64 ``(draws, sublayers, tokens)``; resnet_ratios: float64 ``(draws, units)``.
        ratio_summary: :data:`RATIO_FIELDS` -> ``[per draw]`` (:func:`~vitcnn_utils.chapters.skip_ratio_summary`).
        heatmap_labels: the models of the Fig 8 heatmaps, in panel order (control, long ViT, no-skip models).
        heatmap_names: their (shared) heatmap layers; within: label -> float64 ``(draws, layers, layers)``.
        accuracy: label -> ``[per draw]`` top-1 on the draw's images.
        no_skip: one :class:`NoSkipRow` per no-skip model (empty when none was given: F8 not measured).
    """
    vit: ModelInfo
    resnet: ModelInfo
    control: ModelInfo | None
    n_draws: int
    seeds: list[int]
    n_images: int
    batch_size: int
    num_prefix_tokens: int
    sublayers: list[str]
    units: list[str]
    vit_ratios: torch.Tensor
    resnet_ratios: torch.Tensor
    ratio_summary: dict[str, list[float]]
    heatmap_labels: list[str]
    heatmap_names: list[str]
    within: dict[str, torch.Tensor]
    accuracy: dict[str, list[float]]
    no_skip: list[NoSkipRow]

    # -- views the notebook uses ------------------------------------------------------------------------------
    @property
    def intact(self) -> ModelInfo:
        """The intact ViT F8 compares against: the control, or the long ViT when there is none."""
        return self.control or self.vit

    @property
    def half(self) -> int:
        """Number of sublayers in the first half of the ViT (:func:`~vitcnn_utils.chapters.skip_ratio_summary`)."""
        return len(self.sublayers) // 2

    def profile(self) -> dict[str, torch.Tensor | None]:
        """Per-draw ratio curves: ``{"depth": (sublayers,), "cls": (draws, sublayers) or None, "spatial": (draws,
        sublayers), "resnet_depth": (units,), "resnet": (draws, units)}`` (float64)."""
        curves = [ratio_profile(r, self.num_prefix_tokens) for r in self.vit_ratios]
        return {"depth": curves[0]["depth"],
                "cls": torch.stack([c["cls"] for c in curves]) if self.num_prefix_tokens else None,
                "spatial": torch.stack([c["spatial"] for c in curves]),
                "resnet_depth": normalised_depth(len(self.units)), "resnet": self.resnet_ratios}

    def mean_ratios(self) -> torch.Tensor:
        """The ViT's ratios ``(sublayers, tokens)`` averaged over the draws."""
        return self.vit_ratios.mean(0)

    def mean_within(self, label: str) -> torch.Tensor:
        return torch.nanmean(self.within[label], 0)

    def panel_title(self, label: str) -> str:
        """Heatmap panel title: what the model is, its steps and accuracies."""
        info = {**{r.label: r.model for r in self.no_skip}, self.vit.name: self.vit,
                **({self.control.name: self.control} if self.control else {})}[label]
        block = {r.label: r.block for r in self.no_skip}.get(label)
        what = (f"no skips in block {block}" if block is not None else
                "intact ViT, matched control" if self.control and label == self.control.name else
                "intact ViT, long schedule")
        steps = f", {info.steps:,} steps" if info.steps is not None else ", untrained / not in the zoo"
        test = f", test set {info.test_accuracy:.1%}" if info.test_accuracy is not None else ""
        acc = sum(self.accuracy[label]) / self.n_draws
        return f"{what}\n{display_name(info.name)}{steps}\naccuracy {acc:.1%} here (mean of {self.n_draws} draws){test}"

    def heatmap_panels(self) -> list[dict]:
        """The Fig 8 panels for :func:`vitcnn_utils.plotting.no_skip_heatmap_grid`: the intact reference, then
        every no-skip model (its removed block framed), heatmaps averaged over the draws."""
        blocks = {r.label: r.block for r in self.no_skip}
        return [{"matrix": self.mean_within(label), "names": self.heatmap_names, "title": self.panel_title(label),
                 "block": blocks.get(label)} for label in [self.intact.name, *blocks]]

    def no_skip_series(self) -> dict:
        """What :func:`vitcnn_utils.plotting.no_skip_summary` draws: ``blocks``, ``split`` (label -> per block ->
        per draw: CKA across the block in the intact control, the long ViT when there is a control, and the no-skip
        model), ``drops`` (accuracy lost in points against the control and the long ViT), ``middle_block`` (the
        block nearest mid-depth, where F8's accuracy criterion applies)."""
        intact, long = display_name(self.intact.name), display_name(self.vit.name)
        split = {f"intact: {intact}": [r.split_cka_intact for r in self.no_skip]}
        # the accuracy lost is read against the control only: against the long schedule it is mostly the schedule
        drops = {f"vs {intact}" + (" (same schedule)" if self.control else ""):
                 [_scaled(r.accuracy_drop) for r in self.no_skip]}
        if self.control:
            split[f"intact: {long}"] = [r.split_cka_long for r in self.no_skip]
        split["without the block's skips"] = [r.split_cka_no_skip for r in self.no_skip]
        middle = min(self.no_skip, key=lambda r: abs(r.depth_fraction - 0.5)).block if self.no_skip else None
        return {"blocks": [r.block for r in self.no_skip], "split": split, "drops": drops, "middle_block": middle}

    def to_record(self) -> dict:
        """The numbers :func:`vitcnn_utils.findings.record` stores for the conclusion (see the results schema:
        every per-draw value a list over draws)."""
        profile = self.profile()
        return {
            "n_draws": self.n_draws, "seeds": self.seeds, "n_images": self.n_images,
            **{field: self.ratio_summary[field] for field in RATIO_FIELDS},
            "vit_sublayers": self.sublayers, "resnet_units": self.units,
            "cls_ratio_by_sublayer": profile["cls"].tolist() if profile["cls"] is not None else None,
            "spatial_ratio_by_sublayer": profile["spatial"].tolist(),
            "resnet_ratio_by_unit": self.resnet_ratios.tolist(),
            "vit": self.vit.to_record() | {"accuracy": self.accuracy[self.vit.name]},
            "control": ({"name": self.control.name, "steps": self.control.steps, "epochs": self.control.epochs,
                         "test_accuracy": self.control.test_accuracy, "accuracy": self.accuracy[self.control.name]}
                        if self.control else {"name": None, "steps": None}),
            "no_skip": [r.to_record() for r in self.no_skip],
        }


def _model(name_or_model, label, weights, pretrained, device) -> tuple[torch.nn.Module, str]:
    if isinstance(name_or_model, torch.nn.Module):
        return name_or_model, label
    return load_named(name_or_model, weights=weights, pretrained=pretrained, device=device), name_or_model



def numbers(results: Sequence[SkipConnectionsResult]) -> dict[str, str]:
    """The numbers the chapter's text inserts (``{glue:text}`` keys), each an interval over every training seed's
    result (``results``: the chapter's own run first, then its seed twins') and its draws (``"0.67 [0.62,
    0.71]"``), and the training budgets behind the no-skip comparison."""
    r0 = results[0]

    def iv(quantity, digits=2, scale=1.0, unit=""):
        return evidence.over_seeds(results, quantity, digits, scale, unit)
    out = {"sk_runs": evidence.runs_text(len(results), r0.n_draws), "sk_images": f"{r0.n_images:,}",
           "sk_first_half": f"{r0.sublayers[0]} to {r0.sublayers[r0.half - 1]}",
           "sk_second_half": f"{r0.sublayers[r0.half]} to {r0.sublayers[-1]}",
           "sk_times": iv(lambda r: [v / b for v, b in zip(r.ratio_summary["vit_median_ratio"],
                                                            r.ratio_summary["resnet_median_ratio"])], 1)}
    for key, field in (("cls_first", "cls_ratio_first_half"), ("patch_first", "spatial_ratio_first_half"),
                       ("cls_second", "cls_ratio_second_half"), ("patch_second", "spatial_ratio_second_half"),
                       ("vit_median", "vit_median_ratio"), ("resnet_median", "resnet_median_ratio"),
                       ("resnet_min", "resnet_min_ratio"), ("resnet_max", "resnet_max_ratio")):
        out[f"sk_{key}"] = iv(lambda r, f=field: r.ratio_summary[f])
    intact = r0.intact
    steps = {row.model.steps for row in r0.no_skip}
    out["sk_control"] = f"{display_name(intact.name)}" + (f", {intact.steps:,} steps" if intact.steps else "")
    out["sk_no_skip_steps"] = (", ".join(f"{s:,}" for s in sorted(steps)) if steps and None not in steps
                               else "no record (not zoo models)")
    out["sk_budget"] = ("not applicable: no ViT without skips was given" if not r0.no_skip else
                        "not known: a model carries no training record" if intact.steps is None or None in steps else
                        "matched" if steps == {intact.steps} else
                        "not matched: the accuracy drops mix the missing skips with the length of training")
    return out


def no_skip_table(results: Sequence[SkipConnectionsResult]) -> str:
    """Markdown: per block whose skips were removed, the CKA across the block in the intact control and without
    the skips, and the accuracy lost (intervals over training seeds and draws, as :func:`numbers`)."""
    r0 = results[0]
    if not r0.no_skip:
        return "*No ViT without skips was given (`vit_no_skip` is empty): nothing measured for Fig 8.*"

    def iv(k, quantity, digits=2, scale=1.0, unit=""):
        return evidence.over_seeds(results, lambda r: quantity(r.no_skip[k]), digits, scale, unit)
    lines = ["| skips removed in | CKA across the block: intact | without the skips | accuracy: intact "
             "| without the skips | lost (points) |", "|:--|--:|--:|--:|--:|--:|"]
    for k, row in enumerate(r0.no_skip):
        lines.append(f"| block {row.block} (depth {row.depth_fraction:.1f}) | {iv(k, lambda x: x.split_cka_intact)} "
                     f"| {iv(k, lambda x: x.split_cka_no_skip)} | {iv(k, lambda x: x.accuracy_intact, 1, 100, '%')} "
                     f"| {iv(k, lambda x: x.accuracy_no_skip, 1, 100, '%')} | {iv(k, lambda x: x.accuracy_drop, 1, 100)} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Params(ChapterParams):
    """The chapter's parameters (see :class:`~vitcnn_utils.chapters.params.ChapterParams` for the common ones).

    Attributes:
        vit, resnet: the intact models (names or model objects).
        vit_no_skip: ViTs with one block's skip connections removed each.
        vit_control: an intact ViT trained with the no-skip models' recipe (``None``: use ``vit``).
        n_images, batch_size: test images per draw, in minibatches of ``batch_size``.
    """
    vit: str | torch.nn.Module = "zoo:vit-cls"
    resnet: str | torch.nn.Module = "zoo:resnet"
    vit_no_skip: Sequence[str | torch.nn.Module] = ("zoo:vit-cls-noskip1", "zoo:vit-cls-noskip3",
                                                    "zoo:vit-cls-noskip5")
    vit_control: str | torch.nn.Module | None = "zoo:vit-cls-e3"
    n_images: int = 1000
    batch_size: int = 250


MODEL_ARGUMENTS = ("vit", "resnet", "vit_control", "vit_no_skip")   # run()'s model arguments: swapped for their seed twins (vitcnn_utils.seeds)


def run(params: Params | None = None, **overrides) -> SkipConnectionsResult:
    """Compute the chapter: the notebook's parameters in, a :class:`SkipConnectionsResult` out.

    Models are :func:`~vitcnn_utils.models.load_named` names or model objects (objects are labelled ``"ViT"``,
    ``"ResNet"``, ``"control"`` and ``"no-skip <i>"``). ``vit_control=None`` (or the same name as ``vit``) makes
    the long ViT the intact reference of Fig 8. Draw ``d`` uses :func:`~vitcnn_utils.data.analysis_batches`
    with ``seed + d``.
    """
    p = Params.resolve(params, overrides)
    vit_model, vit_name = _model(p.vit, "ViT", p.weights, p.pretrained, p.device)
    res_model, res_name = _model(p.resnet, "ResNet", p.weights, p.pretrained, p.device)
    control_model = control_name = None
    if p.vit_control is not None and p.vit_control is not p.vit and p.vit_control != vit_name:
        control_model, control_name = _model(p.vit_control, "control", p.weights, p.pretrained, p.device)
    no_skip = dict(_model(m, f"no-skip {i}", p.weights, p.pretrained, p.device)[::-1] for i, m in enumerate(p.vit_no_skip))
    intact_name, intact_model = (control_name, control_model) if control_model is not None else (vit_name, vit_model)
    vits = {intact_name: intact_model, **({vit_name: vit_model} if control_model is not None else {}), **no_skip}
    if len(vits) != 1 + (control_model is not None) + len(no_skip):
        raise ValueError(f"the ViTs need distinct names: {[intact_name, vit_name] + list(no_skip)}")
    all_draws = image_draws(p)
    seeds = [d.seed for d in all_draws]

    vit_ratios, res_ratios, summaries, within, accuracy, comparisons, long_split = [], [], [], [], [], [], []
    sublayers = units = names = None
    n_seen = None
    for draw in all_draws:
        batches = draw.images(p.n_images, p.batch_size)
        vr, sublayers = cache.measured(measure.vit_skip_ratios, vit_model, batches, p.device, enabled=p.use_cache)
        rr, units = cache.measured(measure.resnet_skip_ratios, res_model, batches, p.device, enabled=p.use_cache)
        vit_ratios.append(vr.double())
        res_ratios.append(rr.double())
        summaries.append(skip_ratio_summary(vr, rr, vit_model.num_prefix_tokens))

        heatmaps, acc = cache.measured(measure.heatmaps_with_accuracy, vits, batches, device=p.device,
                                       gram_dtype=p.gram_dtype, enabled=p.use_cache)    # one forward pass for both
        names = heatmaps.names[intact_name] if names is None else names
        n_seen = heatmaps.n_images
        within.append({label: heatmaps[label, label].double() for label in vits})
        accuracy.append(acc)
        comparisons.append(no_skip_comparison(heatmaps, intact_name, no_skip, acc, intact_model))
        long_split.append([split_contrast(heatmaps[vit_name, vit_name], names, row["block"])
                           for row in comparisons[-1]])

    rows = []
    for k, label in enumerate(no_skip):
        per = [c[k] for c in comparisons]

        def col(field, per=per):
            return [row[field] for row in per]
        rows.append(NoSkipRow(
            model=ModelInfo.of(no_skip[label], label), block=per[0]["block"], depth_fraction=per[0]["depth_fraction"],
            split_cka_intact=col("split_cka_intact"), split_cka_long=[ls[k] for ls in long_split],
            split_cka_no_skip=col("split_cka_no_skip"), within_before_no_skip=col("within_before_no_skip"),
            within_after_no_skip=col("within_after_no_skip"), accuracy_intact=col("accuracy_intact"),
            accuracy_no_skip=col("accuracy_no_skip"), accuracy_drop=col("accuracy_drop"),
            accuracy_drop_long=[a[vit_name] - a[label] for a in accuracy]))
    return SkipConnectionsResult(
        vit=ModelInfo.of(vit_model, vit_name), resnet=ModelInfo.of(res_model, res_name),
        control=ModelInfo.of(control_model, control_name) if control_model is not None else None,
        n_draws=p.n_draws, seeds=seeds, n_images=n_seen, batch_size=p.batch_size,
        num_prefix_tokens=int(vit_model.num_prefix_tokens), sublayers=list(sublayers), units=list(units),
        vit_ratios=torch.stack(vit_ratios), resnet_ratios=torch.stack(res_ratios),
        ratio_summary={field: [s.get(field, float("nan")) for s in summaries] for field in RATIO_FIELDS},
        heatmap_labels=list(vits), heatmap_names=list(names),
        within={label: torch.stack([w[label] for w in within]) for label in vits},
        accuracy={label: [a[label] for a in accuracy] for label in vits}, no_skip=rows)


def skip_ratio_summary(vit_ratios: torch.Tensor, resnet_ratios: torch.Tensor | None = None,
                       num_prefix_tokens: int = 1) -> dict[str, float]:
    """The numbers the chapter reports about Fig 7 (plain floats).

    The first half of the ViT is its first ``sublayers // 2`` rows of ``vit_ratios`` (``(2·blocks, tokens)``,
    attention and MLP sublayers of the lower half of the blocks), the second half the remaining rows.

    Returns:
        ``cls_ratio_first_half``, ``cls_ratio_second_half``: arithmetic mean over the half's sublayers of the
        CLS token's ratio (NaN without a CLS token); ``spatial_ratio_first_half``, ``spatial_ratio_second_half``:
        the same for the per-sublayer mean over patch tokens; ``vit_median_ratio``, ``vit_max_ratio``,
        ``vit_min_ratio``: median, max and min over all ``(sublayer, token)`` entries; with ``resnet_ratios``
        ``(units,)``: ``resnet_median_ratio``, ``resnet_max_ratio``, ``resnet_min_ratio``.
    """
    vit_ratios = torch.as_tensor(vit_ratios, dtype=torch.float64)
    profile = ratio_profile(vit_ratios, num_prefix_tokens)
    half = vit_ratios.shape[0] // 2
    if half < 1:
        raise ValueError("need at least two sublayers to split the network into halves")
    nan = float("nan")
    out = {}
    for part, rows in (("first_half", slice(0, half)), ("second_half", slice(half, None))):
        out[f"cls_ratio_{part}"] = profile["cls"][rows].mean().item() if profile["cls"] is not None else nan
        out[f"spatial_ratio_{part}"] = profile["spatial"][rows].mean().item()
    out |= {"vit_median_ratio": vit_ratios.flatten().median().item(), "vit_max_ratio": vit_ratios.max().item(),
            "vit_min_ratio": vit_ratios.min().item()}
    if resnet_ratios is not None:
        resnet_ratios = torch.as_tensor(resnet_ratios, dtype=torch.float64).flatten()
        out |= {"resnet_median_ratio": resnet_ratios.median().item(), "resnet_max_ratio": resnet_ratios.max().item(),
                "resnet_min_ratio": resnet_ratios.min().item()}
    return out


def no_skip_comparison(heatmaps, intact: str, no_skip: dict[str, torch.nn.Module],
                       accuracies: dict[str, float], intact_model: torch.nn.Module | None = None) -> list[dict]:
    """One record per no-skip ViT against the intact ViT (paper Fig 8).

    Args:
        heatmaps: :class:`vitcnn_utils.cka.Heatmaps` holding the intact model (label ``intact``) and every
            model of ``no_skip``; the within-model heatmaps must share layer names.
        no_skip: ``{label: model}``; each model has exactly one block without skips (:func:`removed_blocks`).
        accuracies: ``{label: top-1 fraction}`` on the analysis images, for ``intact`` and every no-skip label.
        intact_model: the intact model, for its manifest entry (optional).

    Returns:
        per no-skip model, ``{"label", "block", "depth_fraction"`` (block / (blocks − 1)), ``"split_cka_intact", "split_cka_no_skip"`` (:func:`split_contrast`
        of the intact and the no-skip heatmap at the removed block), ``"within_before_no_skip",
        "within_after_no_skip"`` (:func:`split_summary`), ``"accuracy_intact", "accuracy_no_skip",
        "accuracy_drop"`` (intact minus no-skip, fractions), ``"test_accuracy_intact", "test_accuracy_no_skip",
        "epochs_intact", "epochs_no_skip", "steps_fraction"`` (no-skip optimisation steps / intact ones) from
        the zoo manifests (``None`` for models without a manifest entry)}``.
    """
    intact_entry = getattr(intact_model, "zoo_entry", None)
    rows = []
    for label, model in no_skip.items():
        blocks = removed_blocks(model)
        if len(blocks) != 1:
            raise ValueError(f"{label}: expected exactly one block without skips, found {blocks}")
        block = blocks[0]
        names = heatmaps.names[label]
        if heatmaps.names[intact] != names:
            raise ValueError(f"{label} and {intact} were captured at different layers")
        split = split_summary(heatmaps[label, label], names, block)
        entry = getattr(model, "zoo_entry", None)
        rows.append({
            "label": label, "block": block, "depth_fraction": normalised_depth(len(model.blocks))[block].item(),
            "split_cka_intact": split_contrast(heatmaps[intact, intact], names, block),
            "split_cka_no_skip": split["across"],
            "within_before_no_skip": split["before"], "within_after_no_skip": split["after"],
            "accuracy_intact": accuracies[intact], "accuracy_no_skip": accuracies[label],
            "accuracy_drop": accuracies[intact] - accuracies[label],
            "test_accuracy_intact": intact_entry["test_accuracy"] if intact_entry else None,
            "test_accuracy_no_skip": entry["test_accuracy"] if entry else None,
            "epochs_intact": intact_entry["epochs"] if intact_entry else None,
            "epochs_no_skip": entry["epochs"] if entry else None,
            "steps_fraction": (optimisation_steps(entry) / optimisation_steps(intact_entry)
                               if entry and intact_entry else None),
        })
    return rows


# -- the paper's findings this chapter judges (gathered by vitcnn_utils.findings) -------------------------------
# Each rule reads the chapter's record of every training seed (evidence.replicates) and judges intervals.

@dataclass(frozen=True)
class ControlFacts:
    """The intact ViT F8 compares against (``None`` fields: no control in this run, or not in the zoo)."""
    name: str | None
    steps: int | None


@dataclass(frozen=True)
class NoSkipFacts:
    """One no-skip ViT as F8 reads it (per-draw lists)."""
    block: int
    depth_fraction: float
    steps: int | None
    split_cka_intact: list[float]
    split_cka_no_skip: list[float]
    accuracy_drop: list[float]


@dataclass(frozen=True)
class Record(ChapterRecord):
    """What F7–F8 read from the chapter's record (per draw: a list over draws)."""
    seeds: list[int]
    cls_ratio_first_half: list[float]
    spatial_ratio_first_half: list[float]
    cls_ratio_second_half: list[float]
    spatial_ratio_second_half: list[float]
    vit_median_ratio: list[float]
    resnet_median_ratio: list[float]
    control: ControlFacts
    no_skip: list[NoSkipFacts]


def _f7(v: Record) -> Judgement:
    reps = replicates(v)
    first = per_seed(reps, lambda r: diff(r.cls_ratio_first_half, r.spatial_ratio_first_half))
    second = per_seed(reps, lambda r: diff(r.cls_ratio_second_half, r.spatial_ratio_second_half))
    over = per_seed(reps, lambda r: [a / b for a, b in zip(draws(r.vit_median_ratio), draws(r.resnet_median_ratio))])
    t = lambda k: interval(per_seed(reps, lambda r: getattr(r, k))).text()   # noqa: E731
    return Judgement(
        f"skip ratio ‖z‖/‖f(z)‖, first half: CLS {t('cls_ratio_first_half')} vs patches "
        f"{t('spatial_ratio_first_half')}; second half: CLS {t('cls_ratio_second_half')} vs patches "
        f"{t('spatial_ratio_second_half')}; median ViT {t('vit_median_ratio')}, ResNet {t('resnet_median_ratio')} "
        f"({seeds_text(reps)})",
        central=check("CLS ratio above the patch tokens' in the first half", first, ">", 0.0),
        secondary=(check("below them in the second half", second, "<", 0.0),),
        size=(check(f"ViT median ratio ≥ {F7_MEDIAN_TIMES:g}× the ResNet's", over, "≥", F7_MEDIAN_TIMES, PROJECT + " of “far above” (Fig 7)"),))


def _f8(v: Record) -> Judgement:
    reps = replicates(v)
    rows, control = v.no_skip, v.control
    if not rows:
        return Judgement("no ViT without skips in this run", not_measured="the chapter ran without no-skip models")
    middle = min(range(len(rows)), key=lambda k: abs(rows[k].depth_fraction - 0.5))
    matched = all(r.control.name is not None and r.control.steps is not None
                  and all(row.steps == r.control.steps for row in r.no_skip) for r in reps)
    steps = ", ".join(f"block {row.block}: {row.steps}" for row in rows)

    def split(k):
        return per_seed(reps, lambda r: diff(r.no_skip[k].split_cka_intact, r.no_skip[k].split_cka_no_skip))

    def drop(k):
        return per_seed(reps, lambda r: r.no_skip[k].accuracy_drop)
    text = "; ".join(f"block {row.block}: CKA across it lower by {interval(split(k)).text()} without skips, "
                     f"accuracy drop {interval(drop(k)).text(1, 100, ' points')}" for k, row in enumerate(rows))
    others = [k for k in range(len(rows)) if k != middle]
    return Judgement(
        text + f" (intact control {control.name}, {control.steps} steps; no-skip models {steps}; "
        f"{seeds_text(reps)})",
        controls=(flag("intact control trained with the no-skip models' number of optimisation steps", matched,
                       f"control {control.steps} steps; {steps}"),),
        central=check(f"CKA across the middle block (block {rows[middle].block}) lower without its skips",
                      split(middle), ">", 0.0),
        size=(check(f"about 4 points accuracy lost at the middle block (≥ {100 * F8_ACCURACY_DROP:g})", drop(middle),
                    "≥", F8_ACCURACY_DROP, PAPER + " (Fig 8: about 4%)", 1, 100, " points"),),
        secondary=tuple(check(f"CKA across block {rows[k].block} lower without its skips", split(k), ">", 0.0)
                        for k in others))


FINDINGS = (
    Finding(7, "Fig 7", "skip_connections",
            "early on the CLS token travels the skip path while patch tokens change; reversed later; ViT ratios far "
            "above the ResNet's", _f7,
            "with 6 blocks and a 10-class task the CLS token may have little to gather", record=Record),
    Finding(8, "Fig 8", "skip_connections",
            "removing a block's skips splits the CKA heatmap there; middle blocks cost about 4% accuracy", _f8,
            record=Record),
)

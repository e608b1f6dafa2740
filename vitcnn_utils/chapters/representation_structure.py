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

Each draw's heatmaps are cached (:func:`vitcnn_utils.cache.cached`, namespace ``"heatmaps"``, the draw's seed in
the key), so draw 0 is the plain library call on ``seed``'s images and a rebuild after a text edit is instant.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .. import cache, cka, measure
from .. import data as vdata
from ..hooks import block_outputs
from ..findings import fmt as _fmt
from ..models import load_named

MODELS = ("ViT", "ResNet")
LOW, HIGH = (0.0, 0.25), (0.75, 1.0)      # the quarters compared by F1 (fractions of a model's layers)


def _counts(values) -> str:
    """Integer counts over the draws: the one value, or ``min–max``."""
    values = [int(v) for v in values]
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}–{max(values)}"


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

    # -- the "Measured" paragraphs (every number with its spread over the draws) -------------------------------
    def measured_within(self) -> str:
        """Markdown: the F1 numbers (lowest vs highest quarter, all layers and block outputs; whole heatmap)."""
        v, r = self.low_high["ViT"], self.low_high["ResNet"]
        vb, rb = self.low_high_blocks["ViT"], self.low_high_blocks["ResNet"]
        above = sum(a > b for a, b in zip(v, r))
        above_b = sum(a > b for a, b in zip(vb, rb))
        nv, nr = len(self.block_names["ViT"]), len(self.block_names["ResNet"])
        return (f"**Measured** (mean ± SD over {self.n_draws} draws of {self.n_images} test images, range in "
                f"brackets). Mean CKA between the lowest and the highest quarter of the layers: ViT **{_fmt(v)}**, "
                f"ResNet **{_fmt(r)}**; ViT minus ResNet {_fmt([a - b for a, b in zip(v, r)])}, the ViT's higher in "
                f"{above} of {self.n_draws} draws. On the residual stream alone (the {nv} block outputs of the ViT, "
                f"the {nr} unit outputs of the ResNet): ViT **{_fmt(vb)}**, ResNet **{_fmt(rb)}** (the ViT's higher "
                f"in {above_b} of {self.n_draws} draws). Mean over the whole heatmap: ViT "
                f"{_fmt(self.overall['ViT'])}, ResNet {_fmt(self.overall['ResNet'])}. The paper: the ViT's heatmap "
                f"is the more uniform one, its lowest and highest layers far more alike than a ResNet's.")

    def measured_across(self) -> str:
        """Markdown: the F2 numbers (best matches of the ViT's lowest quarter; the ViT's last third)."""
        q, counts = self.vit_lowest_quarter_layers, self.vit_lowest_quarter_best_in_resnet_lower_half_count
        n_vit, n_res = self.n_layers["ViT"], self.n_layers["ResNet"]
        names = ", ".join(f"`{n}`" for n in self.lowest_quarter_names())
        count_text = (f"**{counts[0]} of {q}**" if len(set(counts)) == 1 else
                      f"**{min(counts)}–{max(counts)} of {q}** (per draw: {', '.join(map(str, counts))})")
        return (f"**Measured** ({self.n_draws} draws). Of the ViT's lowest quarter ({q} of its {n_vit} layers: "
                f"{names}), {count_text} have their most similar ResNet layer in the ResNet's lower half (its first "
                f"{self.resnet_lower_half_layers} of {n_res} layers); over all ViT layers, "
                f"{_counts(self.vit_layers_best_in_resnet_lower_half)} of {n_vit} do. The highest CKA of any layer of "
                f"the ViT's last third (layers {self.vit_last_third_start}–{n_vit - 1}, from "
                f"`{self.names['ViT'][self.vit_last_third_start]}` on) with any ResNet layer is "
                f"**{_fmt(self.max_cka_vit_last_third)}** (mean of the per-layer maxima "
                f"{_fmt(self.mean_max_cka_vit_last_third)}), against {_fmt(self.max_cka_cross)} over the whole "
                f"heatmap. The paper: the lower half of ResNet-50 matches the lowest quarter of the ViT, and the "
                f"last third of the ViT matches no ResNet layer.")

    def to_record(self) -> dict:
        """The numbers :func:`vitcnn_utils.findings.record` stores for the conclusion (see the results schema:
        counts as ints, every per-draw value a list over draws)."""
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
        }


def _model(name_or_model, label, weights, pretrained, device) -> tuple[torch.nn.Module, str]:
    if isinstance(name_or_model, torch.nn.Module):
        return name_or_model, label
    return load_named(name_or_model, weights=weights, pretrained=pretrained, device=device), name_or_model


def draw_summary(heatmaps: cka.Heatmaps, block_names: Mapping[str, list[str]]) -> dict:
    """The F1/F2 numbers of one draw's :class:`~vitcnn_utils.cka.Heatmaps` of ``"ViT"`` and ``"ResNet"``."""
    names = heatmaps.names
    out = {"low_high": {}, "low_high_blocks": {}, "overall": {}}
    for label in MODELS:
        matrix = heatmaps[label, label]
        out["low_high"][label] = cka.band_mean(matrix, LOW, HIGH)
        out["overall"][label] = cka.band_mean(matrix, (0, 1), (0, 1))
        idx = [names[label].index(n) for n in block_names[label]]
        out["low_high_blocks"][label] = cka.band_mean(matrix[idx][:, idx], LOW, HIGH)
    cross = heatmaps["ResNet", "ViT"]
    n_res, n_vit = cross.shape
    match = cka.best_match(cross)
    half, quarter, third = n_res // 2, lowest_quarter(n_vit), last_third_start(n_vit)
    top = cross[:, third:]
    out |= {"best_match": match, "max_per_vit_layer": cka.nanmax(cross, 0),
            "lowest_quarter_count": int((match[:quarter] < half).sum().item()),
            "best_in_lower_half": int((match < half).sum().item()),
            "max_last_third": cka.nanmax(top), "mean_max_last_third": cka.nanmax(top, 0).mean().item(),
            "max_cross": cka.nanmax(cross)}
    return out


def run(vit: str | torch.nn.Module = "zoo:vit-cls", resnet: str | torch.nn.Module = "zoo:resnet",
        weights: Mapping[str, str] | None = None, pretrained: bool = False, data: str = "fashion-mnist",
        data_dir: str | None = None, image_size: int | None = None, n_images: int = 2048, batch_size: int = 256,
        device: str = "cpu", seed: int = 0, n_draws: int = 5, use_cache: bool = True
        ) -> RepresentationStructureResult:
    """Compute the chapter: the notebook's parameters in, a :class:`RepresentationStructureResult` out.

    ``vit`` and ``resnet`` are :func:`~vitcnn_utils.models.load_named` names or model objects. Draw ``d`` runs
    :func:`~vitcnn_utils.measure.model_heatmaps` on :func:`~vitcnn_utils.data.analysis_batches` with ``seed + d``.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    models, names_given = {}, {}
    for label, spec in zip(MODELS, (vit, resnet)):
        models[label], names_given[label] = _model(spec, label, weights, pretrained, device)
    fingerprints = [cache.model_fingerprint(m, names_given[label]) for label, m in models.items()]
    block_names = {label: block_outputs(m) for label, m in models.items()}
    seeds = [seed + d for d in range(n_draws)]

    draws, summaries = [], []
    for s in seeds:
        batches = vdata.analysis_batches(data, n_images, batch_size, seed=s, data_dir=data_dir, image_size=image_size)
        key = {"models": fingerprints, "data": data, "n": n_images, "batch": batch_size, "seed": s,
               "image_size": image_size}
        heatmaps = cache.cached("heatmaps", key, lambda: measure.model_heatmaps(models, batches, device=device),
                                use_cache)
        if draws and heatmaps.names != draws[0].names:
            raise RuntimeError("the captured layers differ between draws")
        draws.append(heatmaps)
        summaries.append(draw_summary(heatmaps, block_names))

    names = draws[0].names
    n_vit, n_res = len(names["ViT"]), len(names["ResNet"])

    def per_draw(field, label=None):
        return [s[field][label] if label else s[field] for s in summaries]
    return RepresentationStructureResult(
        models=names_given, n_draws=n_draws, seeds=seeds, n_images=draws[0].n_images, batch_size=batch_size,
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
        max_cka_cross=per_draw("max_cross"))

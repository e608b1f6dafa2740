"""Chapter "spatial" (paper section 6, Figs 9–11; findings F9 and F10).

:func:`run` computes, for ``n_draws`` independent draws (draw ``d`` uses ``seed + d`` for its analysis images
and for its probe shots, validation and test images):

* **Token ↔ patch CKA** (Figs 9–10): for the final layer of a CLS-token ViT, a GAP ViT and the ResNet's final
  stage, the minibatch CKA between every grid token and every input patch
  (:func:`~vitcnn_utils.measure.token_patch_cka`), and from it the *integer* number of interior tokens
  whose most similar patch is their own (:func:`~vitcnn_utils.localisation.own_patch_counts`).
* **Linear probes** (Fig 11): closed-form ridge probes on every block output
  (:func:`~vitcnn_utils.measure.spatial_probes`): the CLS token, the mean of the (spatial) tokens, and one probe
  per single spatial token (accuracy averaged over tokens).
* **Seed-to-seed baseline**: second training seeds of the two ViTs (``vit_seed``, ``vit_gap_seed``: the same
  spec, seed 1) get the same token–patch counts and the last block's probes, so that a CLS–GAP difference can
  be set beside the difference between two trainings of one model. F9 and F10 then ask their criteria of every
  pairing of a CLS seed with a GAP seed.

Each draw of each model is cached (:func:`vitcnn_utils.cache.measured`: the call is the key), so draw 0 is
the plain library call on ``seed``'s images and a rebuild after a text edit is instant.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import cache, localisation, measure
from ..evidence import (PAPER, PROJECT, ChapterRecord, Finding, Judgement, check, diff, interval, over_seeds,
                        per_seed, replicates, runs_text, seeds_text)
from ..hooks import normalised_depth
from ..models import load_named
from .params import ChapterParams, draws as image_draws

LABELS = ("ViT-CLS", "ViT-GAP", "ResNet")
KEYS = {"ViT-CLS": "vit_cls", "ViT-GAP": "vit_gap", "ResNet": "resnet"}   # labels -> record keys
F9_SIZE_POINTS = 20.0   # F9's size: ViT-CLS above ViT-GAP by this share of the interior tokens, in points
                        # (this project's reading of "much less", Figs 9-10; the bar chart draws it)
SEEDED = ("ViT-CLS", "ViT-GAP")                     # the models with a second training seed (seed baseline)


@dataclass
class SpatialResult:
    """Everything the chapter plots and reports. Per-draw values are lists (or tensors whose first axis is the
    draw), in draw order; labels are :data:`LABELS`.

    Attributes:
        n_draws, seeds: the draws and the seed of each (``seed + d``).
        n_images: test images per draw for the token–patch CKA.
        layers: label -> the layer whose tokens are compared with the input patches.
        geometry: label -> ``{"patch_size", "grid", "num_prefix_tokens"}`` of that layer.
        token_positions: the ``(row, col)`` tokens shown in the figure.
        token_patch_cka: label -> float64 ``(draws, tokens, positions)``.
        counts: label -> :func:`~vitcnn_utils.localisation.own_patch_counts` field -> ``[per draw]`` (ints).
        mean_own, mean_other, undefined_fraction: label -> ``[per draw]`` (from
            :func:`~vitcnn_utils.chapters.localisation_summary`).
        probe_layers, probe_depth: label -> probed block outputs and their normalised depth.
        probe_curves: label -> kind (``cls``, ``gap``, ``spatial_gap``, ``tokens``) -> float64 ``(draws, layers)``.
        token_accuracy_min, token_accuracy_max: label -> ``(draws, layers)``: the worst / best single token.
        lambda_range: the smallest and largest relative ridge λ chosen by any probe of any draw.
        n_classes, shots, val_per_class, n_fit, n_val, n_test: the probes' classes and image counts.
        seed_models: label (of :data:`SEEDED`) -> the name of its second training seed; only labels given one.
        seed_counts: label -> ``[per draw]`` interior own-patch counts of the second seed (ints).
        seed_last: label -> probe kind (as ``probe_curves``) -> ``[per draw]`` last-block accuracy of the
            second seed.
    """
    n_draws: int
    seeds: list[int]
    n_images: int
    layers: dict[str, str]
    geometry: dict[str, dict]
    token_positions: list[tuple[int, int]]
    token_patch_cka: dict[str, torch.Tensor]
    counts: dict[str, dict[str, list[int]]]
    mean_own: dict[str, list[float]]
    mean_other: dict[str, list[float]]
    undefined_fraction: dict[str, list[float]]
    probe_layers: dict[str, list[str]]
    probe_depth: dict[str, list[float]]
    probe_curves: dict[str, dict[str, torch.Tensor]]
    token_accuracy_min: dict[str, torch.Tensor]
    token_accuracy_max: dict[str, torch.Tensor]
    lambda_range: tuple[float, float]
    n_classes: int
    shots: int
    val_per_class: int
    n_fit: int
    n_val: int
    n_test: int
    seed_models: dict[str, str]
    seed_counts: dict[str, list[int]]
    seed_last: dict[str, dict[str, list[float]]]

    # -- views the notebook uses ------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.layers)

    @property
    def chance(self) -> float:
        return 1 / self.n_classes

    def grid(self, label: str) -> tuple[int, int]:
        return tuple(self.geometry[label]["grid"])

    def interior_tokens(self, label: str) -> int:
        """Tokens off the border of the grid (the same in every draw)."""
        return self.counts[label]["interior_tokens"][0]

    def interior_count(self, label: str) -> list[int]:
        """Per draw: interior tokens whose most similar input patch is their own."""
        return self.counts[label]["interior_own_patch_count"]

    def positions(self, label: str) -> list[tuple[int, int]]:
        """The shown tokens on ``label``'s grid: ``token_positions`` are ``(row, col)`` on the ViT-CLS grid; a model
        with another grid (ResNet-50's 7×7 map beside ViT-B/16's 14×14 tokens) shows the same relative places."""
        (rh, rw), (gh, gw) = self.grid("ViT-CLS"), self.grid(label)
        return [(r * gh // rh, c * gw // rw) for r, c in self.token_positions]

    def position_maps(self, label: str) -> torch.Tensor:
        """The shown tokens' CKA with every input patch, averaged over the draws: ``(K, gh, gw)``."""
        return localisation.position_maps(self.token_patch_cka[label].mean(0), self.grid(label), self.positions(label))

    def last(self, label: str, kind: str) -> list[float]:
        """Per draw: the last block's probe accuracy of ``kind`` (in [0, 1])."""
        return self.probe_curves[label][kind][:, -1].tolist()

    @property
    def has_seeds(self) -> bool:
        """Whether both ViTs have a second training seed (the seed-to-seed baseline)."""
        return all(label in self.seed_models for label in SEEDED)

    def criterion_level(self) -> int:
        """F9's size, drawn in the figure: the other models' highest count (any draw, either training seed) plus
        :data:`F9_SIZE_POINTS` of the interior tokens. The rule judges the same margin on its interval."""
        others = [c for label in ("ViT-GAP", "ResNet") for c in self.interior_count(label)]
        others += self.seed_counts.get("ViT-GAP", [])
        return max(others) + math.ceil(F9_SIZE_POINTS * self.interior_tokens("ViT-CLS") / 100)

    def seed_differences(self, label: str, what: str) -> list[float]:
        """Per draw: seed 0 minus seed 1 of ``label`` for ``what`` = ``"count"`` (interior own-patch tokens, ints)
        or a last-block probe kind (``"tokens"``, ``"cls"``, ``"gap"``; in points)."""
        if what == "count":
            return [a - b for a, b in zip(self.interior_count(label), self.seed_counts[label])]
        return [100 * (a - b) for a, b in zip(self.last(label, what), self.seed_last[label][what])]

    def geometry_text(self) -> str:
        """One line per model: the compared layer's token grid, input patch size and prefix tokens."""
        return "; ".join(f"{label} {self.layers[label]}: {g['grid'][0]}×{g['grid'][1]} tokens, input patches of "
                         f"{g['patch_size']} px, {g['num_prefix_tokens']} prefix token(s)"
                         for label, g in self.geometry.items()) + "."

    def to_record(self) -> dict:
        """The numbers :func:`vitcnn_utils.findings.record` stores for the conclusion (see the results schema:
        counts as ints, every per-draw value a list over draws)."""
        rec = {"n_draws": self.n_draws, "seeds": self.seeds, "n_images": self.n_images,
               "token_positions": [list(p) for p in self.token_positions],
               "layers_token_cka": {KEYS[lb]: layer for lb, layer in self.layers.items()}}
        for label in self.labels:
            counts = self.counts[label]
            rec[KEYS[label]] = {
                "interior_own_patch_count": counts["interior_own_patch_count"],
                "interior_tokens": self.interior_tokens(label),
                "interior_defined": counts["interior_defined"],
                "own_patch_count": counts["own_patch_count"], "tokens": counts["tokens"][0],
                "mean_own": self.mean_own[label], "mean_other": self.mean_other[label],
                "undefined_fraction": self.undefined_fraction[label]}
        rec |= {"vit_cls_cls": self.last("ViT-CLS", "cls"), "vit_cls_spatial_gap": self.last("ViT-CLS", "spatial_gap"),
                "vit_cls_tokens": self.last("ViT-CLS", "tokens"), "vit_gap_gap": self.last("ViT-GAP", "gap"),
                "vit_gap_tokens": self.last("ViT-GAP", "tokens"), "resnet_gap": self.last("ResNet", "gap"),
                "resnet_tokens": self.last("ResNet", "tokens"),
                "chance": self.chance, "n_fit": self.n_fit, "n_val": self.n_val, "n_test": self.n_test,
                "shots": self.shots, "lambda_range": list(self.lambda_range),
                "probe_layers": {KEYS[lb]: v for lb, v in self.probe_layers.items()},
                "probe_depth": {KEYS[lb]: v for lb, v in self.probe_depth.items()},
                "probe_curves": {KEYS[lb]: {k: v.tolist() for k, v in c.items()} for lb, c in self.probe_curves.items()},
                "token_accuracy_min": {KEYS[lb]: v.tolist() for lb, v in self.token_accuracy_min.items()},
                "token_accuracy_max": {KEYS[lb]: v.tolist() for lb, v in self.token_accuracy_max.items()},
                "seed_baseline": ({KEYS[lb]: {"model": name, "interior_own_patch_count": self.seed_counts[lb],
                                              **self.seed_last[lb]} for lb, name in self.seed_models.items()}
                                  if self.seed_models else None)}
        return rec


def _model(name_or_model, weights, pretrained, device) -> tuple[torch.nn.Module, str]:
    if isinstance(name_or_model, torch.nn.Module):
        return name_or_model, None
    return load_named(name_or_model, weights=weights, pretrained=pretrained, device=device), name_or_model



def numbers(results: Sequence[SpatialResult]) -> dict[str, str]:
    """The numbers the chapter's text inserts (``{glue:text}`` keys): each an interval over every training seed's
    result (``results``: the chapter's own run first, then its seed twins') and its draws (``"18.2 [16.0,
    20.4]"``), and the probes' set-up."""
    r0 = results[0]
    gh, gw = r0.grid("ViT-CLS")
    lo, hi = r0.lambda_range
    out = {"sp_runs": runs_text(len(results), r0.n_draws), "sp_images": f"{r0.n_images:,}", "sp_grid": f"{gh}×{gw}",
           "sp_interior": str(r0.interior_tokens("ViT-CLS")), "sp_chance": f"{100 * r0.chance:.0f}%",
           "sp_vit_probe_layer": f"{r0.probe_layers['ViT-CLS'][-1]}",
           "sp_resnet_probe_layer": f"{r0.probe_layers['ResNet'][-1]}",
           "sp_fit": f"{r0.n_fit:,} training images ({r0.shots} per class)",
           "sp_val": f"{r0.n_val:,} other training images ({r0.val_per_class} per class)",
           "sp_lambda": f"{lo:g} to {hi:g}", "sp_test": f"{r0.n_test:,}",
           "sp_cls_minus_gap": over_seeds(results, lambda r: [100 * (a - b) for a, b in zip(
               r.last("ViT-CLS", "cls"), r.last("ViT-GAP", "gap"))], 1, unit=" points"),
           "sp_undefined": ", ".join(f"{label} {over_seeds(results, lambda r, lb=label: r.undefined_fraction[lb], 1, 100, '%')}"
                                     for label in r0.labels if max(r0.undefined_fraction[label]) > 0) or "none"}
    for label in r0.labels:
        k = KEYS[label]
        out[f"sp_{k}_layer"] = f"{r0.layers[label]}"
        out[f"sp_{k}_interior"] = (f"{over_seeds(results, lambda r, lb=label: r.interior_count(lb), 1)} of "
                                   f"{r0.interior_tokens(label)}")
        out[f"sp_{k}_own"] = over_seeds(results, lambda r, lb=label: r.mean_own[lb])
        out[f"sp_{k}_other"] = over_seeds(results, lambda r, lb=label: r.mean_other[lb])
        for kind in ("tokens", "cls", "gap", "spatial_gap"):      # every key, so the prose never misses one
            out[f"sp_{k}_{kind}"] = (over_seeds(results, lambda r, lb=label, kd=kind: r.last(lb, kd), 1, 100, "%")
                                     if kind in r0.probe_curves[label] else "not measured (no such readout)")
        out[f"sp_{k}_worst"] = over_seeds(results, lambda r, lb=label: r.token_accuracy_min[lb][:, -1].tolist(), 1,
                                          100, "%")
        out[f"sp_{k}_best"] = over_seeds(results, lambda r, lb=label: r.token_accuracy_max[lb][:, -1].tolist(), 1,
                                         100, "%")
    return out


@dataclass(frozen=True)
class Params(ChapterParams):
    """The chapter's parameters (see :class:`~vitcnn_utils.chapters.params.ChapterParams` for the common ones).

    Attributes:
        vit: a ViT classifying from a CLS token; ``vit_gap``: the same ViT trained with global average pooling.
        resnet: the CNN compared.
        vit_seed, vit_gap_seed: second training seeds of the two ViTs (the seed-to-seed baseline; ``None``: not
            measured).
        vit_layer: the ViTs' final block (token-patch CKA); ``resnet_layer``: the ResNet's final stage.
        token_positions: ``(row, col)`` tokens shown: four interior positions (of the 25 F9 counts).
        n_images, batch_size: test images per draw for the token-patch CKA, in minibatches.
        n_draws: 10 here (5 in the other chapters): the own-patch counts of F9 are integers that vary from draw to
            draw, and with 5 draws F9's verdict differed between two disjoint draw sets (issue 22's check).
        shots: training images per class that fit each probe; ``val_per_class``: further training images per
            class that choose its regularisation; ``n_test``: test images that score the probes.
    """
    vit: str | torch.nn.Module = "zoo:vit-cls"
    vit_gap: str | torch.nn.Module = "zoo:vit-gap"
    resnet: str | torch.nn.Module = "zoo:resnet"
    vit_seed: str | torch.nn.Module | None = "zoo:vit-cls-s1"
    vit_gap_seed: str | torch.nn.Module | None = "zoo:vit-gap-s1"
    vit_layer: str = "blocks.5"
    resnet_layer: str = "layer4.0"
    token_positions: Sequence[Sequence[int]] = ((1, 3), (3, 1), (3, 3), (4, 4))
    n_images: int = 1000
    batch_size: int = 250
    shots: int = 10
    val_per_class: int = 50
    n_test: int = 1000
    n_draws: int = 10    # not 5: F9 counts integer tokens, and at 5 draws its verdict turned on the draw set


MODEL_ARGUMENTS = ("vit", "vit_gap", "resnet", "vit_seed", "vit_gap_seed")   # run()'s model arguments: swapped for their seed twins (vitcnn_utils.seeds)


def run(params: Params | None = None, **overrides) -> SpatialResult:
    """Compute the chapter: the notebook's parameters in, a :class:`SpatialResult` out.

    ``vit``, ``vit_gap`` and ``resnet`` are :func:`~vitcnn_utils.models.load_named` names or models; the two
    ViTs share ``vit_layer``. ``vit_seed`` and ``vit_gap_seed`` are second training seeds of the two ViTs (the
    same spec, another seed; ``None``: none), measured at ``vit_layer`` and probed at the last block only; a seed
    model whose tokens sit differently on the input than its model's is an error. Draw ``d`` uses ``seed + d``
    for the analysis images (:func:`~vitcnn_utils.data.analysis_batches`) and for the probes' images
    (:func:`~vitcnn_utils.data.probe_batches`).
    """
    p = Params.resolve(params, overrides)
    models = {}
    for label, spec in zip(LABELS, (p.vit, p.vit_gap, p.resnet)):
        models[label], _ = _model(spec, p.weights, p.pretrained, p.device)
    seed_models, seed_names = {}, {}
    for label, spec in zip(SEEDED, (p.vit_seed, p.vit_gap_seed)):
        if spec is not None:
            seed_models[label], name = _model(spec, p.weights, p.pretrained, p.device)
            seed_names[label] = name or f"{label} seed 1"
    layers = {"ViT-CLS": p.vit_layer, "ViT-GAP": p.vit_layer, "ResNet": p.resnet_layer}
    positions = [tuple(int(v) for v in pos) for pos in p.token_positions]
    all_draws = image_draws(p)
    seeds = [d.seed for d in all_draws]

    geometry = None
    cka = {label: [] for label in LABELS}
    counts = {label: {} for label in LABELS}
    mean_own, mean_other, undefined = ({label: [] for label in LABELS} for _ in range(3))
    curves = {label: {} for label in LABELS}
    tok_min, tok_max = {label: [] for label in LABELS}, {label: [] for label in LABELS}
    lambdas, probe_layers, sizes = [], {}, None
    seed_counts = {label: [] for label in seed_models}
    seed_last = {label: {} for label in seed_models}
    for draw in all_draws:
        batches = draw.images(p.n_images, p.batch_size)
        if geometry is None:         # the layers' grids do not depend on the images
            geometry = {label: measure.token_geometry(m, layers[label], batches, device=p.device)
                        for label, m in models.items()}
            for label, model in seed_models.items():
                if measure.token_geometry(model, layers[label], batches, device=p.device) != geometry[label]:
                    raise ValueError(f"the second seed of {label} ({seed_names[label]}) has another token geometry "
                                     f"at {layers[label]} than {label}; pass a model of the same architecture")
        fit, val, test = draw.probe_images(p.shots, p.val_per_class, p.n_test, p.batch_size)

        def token_patch(model, label):
            """This draw's token–patch CKA matrix of ``model`` at ``label``'s layer (cached)."""
            g = geometry[label]
            return cache.measured(measure.token_patch_cka, model, batches, layers[label], g["patch_size"],
                                  g["grid"], g["num_prefix_tokens"], device=p.device, gram_dtype=p.gram_dtype,
                                  enabled=p.use_cache)

        def probes(model, only=None):
            """This draw's probes of ``model`` at every block, or at the layers ``only`` (cached)."""
            return cache.measured(measure.spatial_probes, model, fit, val, test, layers=only, device=p.device,
                                  enabled=p.use_cache)

        for label, model in models.items():
            g = geometry[label]
            matrix = token_patch(model, label)
            cka[label].append(matrix.double())
            for field, value in localisation.own_patch_counts(matrix, g["grid"]).items():
                counts[label].setdefault(field, []).append(value)
            summary = localisation_summary(matrix, g["grid"])
            mean_own[label].append(summary["mean_own"])
            mean_other[label].append(summary["mean_other"])
            undefined[label].append(summary["undefined_fraction"])

            result = probes(model)
            prefix = g["num_prefix_tokens"]
            for kind, values in probe_curves(result, prefix).items():
                curves[label].setdefault(kind, []).append(values.double())
            spread = token_accuracy_spread(result, prefix)
            tok_min[label].append(spread["min"].double())
            tok_max[label].append(spread["max"].double())
            lambdas.append(chosen_lambda_range(result))
            probe_layers[label] = list(result.layers)
            sizes = (measure.count_classes(fit), result.n_fit, result.n_val, result.n_test)

        for label, model in seed_models.items():       # second training seeds: the final layer's counts and the
            g = geometry[label]                        # last block's probes (as the models above)
            matrix = token_patch(model, label)
            seed_counts[label].append(localisation.own_patch_counts(matrix, g["grid"])["interior_own_patch_count"])
            result = probes(model, only=probe_layers[label][-1:])
            for kind, values in probe_curves(result, g["num_prefix_tokens"]).items():
                seed_last[label].setdefault(kind, []).append(values[-1].item())
            lambdas.append(chosen_lambda_range(result))

    n_classes, n_fit, n_val, n_test_seen = sizes
    return SpatialResult(
        n_draws=p.n_draws, seeds=seeds, n_images=p.n_images, layers=layers,
        geometry={label: {**g, "grid": tuple(g["grid"])} for label, g in geometry.items()},
        token_positions=positions, token_patch_cka={label: torch.stack(v) for label, v in cka.items()},
        counts=counts, mean_own=mean_own, mean_other=mean_other, undefined_fraction=undefined,
        probe_layers=probe_layers,
        probe_depth={label: normalised_depth(len(v)).tolist() for label, v in probe_layers.items()},
        probe_curves={label: {k: torch.stack(v) for k, v in c.items()} for label, c in curves.items()},
        token_accuracy_min={label: torch.stack(v) for label, v in tok_min.items()},
        token_accuracy_max={label: torch.stack(v) for label, v in tok_max.items()},
        lambda_range=(min(lo for lo, _ in lambdas), max(hi for _, hi in lambdas)),
        n_classes=n_classes, shots=p.shots, val_per_class=p.val_per_class, n_fit=n_fit, n_val=n_val, n_test=n_test_seen,
        seed_models=seed_names, seed_counts=seed_counts, seed_last=seed_last)


def localisation_summary(matrix: torch.Tensor, grid: tuple[int, int]) -> dict:
    """How well tokens localise: the fraction of tokens whose most similar patch is their own, the mean
    CKA with the own patch and with the other patches, and the same fraction for interior tokens only.

    Undefined (NaN) entries, from a token or a patch that is constant over the images (e.g. an always-blank
    image corner), are ignored: a token's best patch is the argmax over its defined entries, the fractions
    count only tokens whose own-patch CKA is defined, and the means run over defined entries.
    ``undefined_fraction`` is the fraction of NaN entries of ``matrix``.
    """
    gh, gw = grid
    matrix = matrix.double()
    n = len(matrix)
    own = matrix.diagonal()
    off = matrix[~torch.eye(n, dtype=torch.bool)]
    hits = torch.nan_to_num(matrix, nan=-torch.inf).argmax(1) == torch.arange(n)
    defined = ~torch.isnan(own)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    interior = ((rows > 0) & (rows < gh - 1) & (cols > 0) & (cols < gw - 1)).flatten()

    def fraction(mask):
        mask = mask & defined
        return hits[mask].double().mean().item() if mask.any() else float("nan")

    return {"own_patch_is_best": fraction(torch.ones(n, dtype=torch.bool)),
            "interior_own_patch_is_best": fraction(interior),
            "mean_own": own.nanmean().item(), "mean_other": off.nanmean().item(),
            "undefined_fraction": torch.isnan(matrix).double().mean().item()}


def probe_curves(result, num_prefix_tokens: int = 0) -> dict[str, torch.Tensor]:
    """Accuracy per probed layer (float64 ``(layers,)``) for each probe kind of a
    :class:`~vitcnn_utils.probes.ProbeResult`: ``"cls"`` (token 0 of a model with prefix tokens; ``"first"``
    otherwise), ``"gap"`` (mean of all tokens), ``"spatial_gap"`` (mean of the spatial tokens), and
    ``"tokens"``: the per-token probes' accuracies averaged over the *spatial* tokens (prefix tokens left out).
    Only kinds present in ``result`` are returned."""
    names = {"first": "cls" if num_prefix_tokens > 0 else "first", "gap": "gap", "gap_spatial": "spatial_gap"}
    curves = {}
    for agg, acc in result.accuracy.items():
        acc = acc.double()
        if agg == "tokens":
            if not 0 <= num_prefix_tokens < acc.shape[1]:
                raise ValueError(f"num_prefix_tokens={num_prefix_tokens} for {acc.shape[1]} token probes")
            curves["tokens"] = acc[:, num_prefix_tokens:].mean(1)
        else:
            curves[names[agg]] = acc[:, 0]
    return curves


def token_accuracy_spread(result, num_prefix_tokens: int = 0) -> dict[str, torch.Tensor]:
    """Per-layer ``{"min", "max"}`` (float64 ``(layers,)``) of the per-token probe accuracies over the
    spatial tokens of a :class:`~vitcnn_utils.probes.ProbeResult` that has ``"tokens"`` probes."""
    acc = result.accuracy["tokens"].double()
    if not 0 <= num_prefix_tokens < acc.shape[1]:
        raise ValueError(f"num_prefix_tokens={num_prefix_tokens} for {acc.shape[1]} token probes")
    spatial = acc[:, num_prefix_tokens:]
    return {"min": spatial.min(1).values, "max": spatial.max(1).values}


def chosen_lambda_range(result) -> tuple[float, float]:
    """Smallest and largest regularisation (relative ``λ / (tr Σ / d)``) chosen by any probe of a
    :class:`~vitcnn_utils.probes.ProbeResult` (each probe chooses its own)."""
    values = torch.cat([v.double().flatten() for v in result.relative_lambda.values()])
    if not len(values):
        raise ValueError("the result holds no probes")
    return values.min().item(), values.max().item()


# -- the paper's findings this chapter judges (gathered by vitcnn_utils.findings) -------------------------------
# Each rule reads the chapter's record of every training seed (evidence.replicates) and judges intervals.

@dataclass(frozen=True)
class OwnPatchFacts:
    """One model's own-patch counts as F9 reads them: per draw, how many of its ``interior_tokens`` interior
    tokens are most similar to their own input patch."""
    interior_own_patch_count: list[int]
    interior_tokens: int


@dataclass(frozen=True)
class Record(ChapterRecord):
    """What F9–F10 read from the chapter's record: own-patch counts per model and the last block's probe
    accuracies per readout (fractions, a list over draws)."""
    seeds: list[int]
    vit_cls: OwnPatchFacts
    vit_gap: OwnPatchFacts
    resnet: OwnPatchFacts
    vit_cls_tokens: list[float]
    vit_gap_tokens: list[float]
    resnet_tokens: list[float]
    vit_cls_cls: list[float]
    vit_gap_gap: list[float]

    def own_patch_points(self, model: str) -> list[float]:
        """Per draw: the share of ``model``'s ("vit_cls", "vit_gap", "resnet") interior tokens most similar to
        their own patch, in percentage points."""
        facts = getattr(self, model)
        return [100.0 * c / facts.interior_tokens for c in facts.interior_own_patch_count]


def _f9(v: Record) -> Judgement:
    reps = replicates(v)
    n = v.vit_cls.interior_tokens
    share = {m: per_seed(reps, lambda r, m=m: r.own_patch_points(m)) for m in ("vit_cls", "vit_gap", "resnet")}
    cls_gap = per_seed(reps, lambda r: diff(r.own_patch_points("vit_cls"), r.own_patch_points("vit_gap")))
    cls_res = per_seed(reps, lambda r: diff(r.own_patch_points("vit_cls"), r.own_patch_points("resnet")))
    return Judgement(
        f"share of the {n} interior tokens most similar to their own input patch: ViT-CLS "
        f"{interval(share['vit_cls']).text(0, unit='%')}, ViT-GAP {interval(share['vit_gap']).text(0, unit='%')}, "
        f"ResNet {interval(share['resnet']).text(0, unit='%')} ({seeds_text(reps)})",
        central=check("ViT-CLS above ViT-GAP", cls_gap, ">", 0.0, digits=0, unit=" points"),
        size=(check(f"by ≥ {F9_SIZE_POINTS:g} points", cls_gap, "≥", F9_SIZE_POINTS, PROJECT + " of “much less” (Figs 9–10)", 0,
                    unit=" points"),),
        secondary=(check("ViT-CLS above the ResNet", cls_res, ">", 0.0, digits=0, unit=" points"),))


def _f10(v: Record) -> Judgement:
    reps = replicates(v)
    gap_cls = per_seed(reps, lambda r: diff(r.vit_gap_tokens, r.vit_cls_tokens))
    res_cls = per_seed(reps, lambda r: diff(r.resnet_tokens, r.vit_cls_tokens))
    same = per_seed(reps, lambda r: diff(r.vit_cls_cls, r.vit_gap_gap))
    t = lambda k: interval(per_seed(reps, lambda r: getattr(r, k))).text(1, 100, "%")   # noqa: E731
    return Judgement(
        f"last block, single-token probes: ViT-CLS {t('vit_cls_tokens')}, ViT-GAP {t('vit_gap_tokens')}, ResNet "
        f"{t('resnet_tokens')}; CLS;CLS {t('vit_cls_cls')} vs GAP;GAP {t('vit_gap_gap')} ({seeds_text(reps)})",
        central=check("ViT-CLS spatial tokens below ViT-GAP's", gap_cls, ">", 0.0, digits=1, scale=100, unit=" points"),
        size=(check("by about the paper's 45 points (≥ 45)", gap_cls, "≥", 0.45,
                    PAPER + " (Fig 11: ViT-GAP ≈ 57%, ViT-CLS ≈ 6–12%)", 1, 100, " points"),),
        secondary=(check("ViT-CLS spatial tokens below the ResNet's", res_cls, ">", 0.0, digits=1, scale=100, unit=" points"),
                   check("CLS;CLS within 3 points of GAP;GAP", same, "within", (-0.03, 0.03),
                         PROJECT + " of “≈” (Fig 11)", 1, 100, " points")))


FINDINGS = (
    Finding(9, "Figs 9–10", "spatial",
            "ViT-CLS final tokens localise to their own patch; ResNet and GAP-ViT much less", _f9,
            "28-px images in 4-px patches may leave each token little context to lose", record=Record),
    Finding(10, "Fig 11", "spatial",
            "single spatial tokens of the CLS model probe poorly; GAP-model and ResNet tokens well; CLS;CLS ≈ GAP;GAP",
            _f10, "10 classes may be far easier to read from one token than the paper's 1,000", record=Record),
)

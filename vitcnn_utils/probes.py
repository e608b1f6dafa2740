"""Linear probes (paper Figs 11 and 13): closed-form ridge regression onto ±1 one-hot targets.

A probe reads a representation ``x ∈ R^d`` (one token, or an aggregate of tokens) and predicts the class as
``argmax_c (Wᵀx + b)_c``, where ``(W, b)`` minimise ``Σ‖Wᵀxᵢ + b − yᵢ‖² + λ‖W‖²`` over the *fit* images,
``yᵢ ∈ {−1, +1}^C`` (``+1`` at the true class), the bias unpenalised. The closed form needs only the sums
``Σ x̃x̃ᵀ`` and ``Σ x̃yᵀ`` of the augmented features ``x̃ = [x, 1]``, and the held-out squared error of any
``(W, b)`` needs only the same sums over the *held-out* images plus ``Σ‖y‖²``; so every statistic is a sum
over images: features never have to be stored, minibatches stream, and under ``torch.distributed`` the
sums (and the test counts) are all-reduced, giving exactly the single-process probes.

``λ`` is chosen per probe from a grid relative to the mean feature variance (``λ = r · tr(Σ)/d``,
``r ∈`` :data:`RELATIVE_LAMBDAS`), by the squared error on held-out *training* images (the loss the probe
minimises); the probe is then scored once on the test images. Sums are float64.

Feature *sites* are named ``"<layer>/<aggregation>"`` and hold ``(B, P, d)`` tensors: ``P`` independent
probes of dimension ``d`` each (``P = 1`` for an aggregate, ``P = tokens`` for per-token probes).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .distributed import all_reduce_sum
from .hooks import block_outputs, iter_features, middle_index, normalised_depth

RELATIVE_LAMBDAS = tuple(10.0 ** k for k in range(-6, 4))
AGGREGATIONS = ("first", "gap", "gap_spatial", "tokens")


def signed_one_hot(labels: torch.Tensor, num_classes: int, dtype=torch.float64) -> torch.Tensor:
    """``(B,)`` integer labels → ``(B, C)`` targets, ``+1`` at the class and ``−1`` elsewhere."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be (B,), got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return 2 * F.one_hot(labels, num_classes).to(dtype) - 1


class RidgeProbes:
    """Many ridge probes fitted from streamed sums.

    Usage (three phases, each any number of minibatches)::

        probes = RidgeProbes(num_classes=10)
        for feats, y in fit:      probes.update("fit", feats, y)    # feats: {site: (B, P, d)}
        for feats, y in held_out: probes.update("val", feats, y)
        probes.solve()                                              # all-reduces, picks λ per probe
        for feats, y in test:     probes.score(feats, y)
        acc = probes.accuracy()                                     # {site: (P,) float64 in [0, 1]}
    """

    def __init__(self, num_classes: int, relative_lambdas: Sequence[float] = RELATIVE_LAMBDAS,
                 device: str | torch.device | None = None):
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not relative_lambdas or min(relative_lambdas) <= 0:
            raise ValueError(f"relative_lambdas must be positive, got {tuple(relative_lambdas)}")
        self.num_classes, self.device = num_classes, device
        self.relative_lambdas = torch.tensor(relative_lambdas, dtype=torch.float64)
        self.moments: dict[str, dict[str, list[torch.Tensor]]] = {"fit": {}, "val": {}}
        self.weights: OrderedDict[str, torch.Tensor] = OrderedDict()    # (P, d + 1, C)
        self.chosen: OrderedDict[str, torch.Tensor] = OrderedDict()     # (P,) relative λ
        self._correct: dict[str, torch.Tensor] = {}
        self._seen = 0

    def update(self, split: str, features: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Add a minibatch to the ``"fit"`` or ``"val"`` (held-out) sums. ``features``: ``{site: (B, P, d)}``."""
        if split not in self.moments:
            raise ValueError(f"split must be 'fit' or 'val', got {split!r}")
        if self.weights:
            raise RuntimeError("probes are already solved: create a new RidgeProbes to fit again")
        for site, x in features.items():
            x_aug, y = self._augment(site, x, labels)
            bucket = self.moments[split]
            if site not in bucket:
                bucket[site] = _Moments(x_aug.shape[1:])
            elif bucket[site].shape != x_aug.shape[1:]:
                raise ValueError(f"site {site!r}: features {tuple(x.shape[1:])} differ from earlier batches")
            bucket[site].add(x_aug, y)

    def _augment(self, site, x, labels):
        if x.ndim != 3:
            raise ValueError(f"site {site!r}: features must be (B, P, d), got {tuple(x.shape)}")
        if x.shape[0] != labels.shape[0]:
            raise ValueError(f"site {site!r}: {x.shape[0]} feature rows but {labels.shape[0]} labels")
        x = x.to(self.device, torch.float64)
        x_aug = torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1)
        return x_aug, signed_one_hot(labels.to(x.device), self.num_classes)

    def solve(self) -> None:
        """All-reduce the sums, fit every probe for every λ and keep the one with the least held-out error."""
        fit, val = self.moments["fit"], self.moments["val"]
        if not fit or set(fit) != set(val):
            raise RuntimeError(f"every site needs fit and held-out batches (fit: {sorted(fit)}, held-out: "
                               f"{sorted(val)})")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        for site in fit:
            f, v = fit[site], val[site]
            if distributed:                              # what the processes can add up: the sums
                f, v = (_Moments.of_sums(all_reduce_sum(m.sums())) for m in (f, v))
            solutions = _ridge_path(f, self.relative_lambdas.to(f.device))
            best_err = best_w = best = None
            for i, w in enumerate(solutions):            # one λ at a time: (P, d+1, C) in memory, not (L, ...)
                err = v.squared_error(w)                 # held-out mean squared error, (P,)
                if best is None:
                    best_err, best_w, best = err, w, torch.zeros_like(err, dtype=torch.long)
                else:
                    better = err < best_err              # strict: of equal errors the smaller λ (argmin's rule)
                    best_err = torch.where(better, err, best_err)
                    best_w = torch.where(better[:, None, None], w, best_w)
                    best = torch.where(better, i, best)
            self.weights[site] = best_w
            self.chosen[site] = self.relative_lambdas[best.cpu()]
        self.moments = {"fit": {}, "val": {}}

    def score(self, features: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Count the test minibatch's correct predictions of every solved probe."""
        if not self.weights:
            raise RuntimeError("call solve() before score()")
        for site, x in features.items():
            if site not in self.weights:
                raise KeyError(f"site {site!r} was not fitted; fitted sites: {', '.join(self.weights)}")
            x_aug, _ = self._augment(site, x, labels)
            pred = torch.einsum("bpi,pic->bpc", x_aug, self.weights[site]).argmax(-1)          # (B, P)
            correct = (pred == labels.to(pred.device)[:, None]).sum(0).double()
            self._correct[site] = self._correct.get(site, 0) + correct
        self._seen += labels.shape[0]

    def accuracy(self) -> OrderedDict[str, torch.Tensor]:
        """Test accuracy ``{site: (P,) float64}`` over everything scored (all-reduced across processes)."""
        if not self._seen and not torch.distributed.is_initialized():
            raise RuntimeError("no test batches were scored")
        sites = list(self.weights)
        device = self.weights[sites[0]].device
        counts = all_reduce_sum([self._correct.get(s, torch.zeros(len(self.chosen[s]), dtype=torch.float64,
                                                                   device=device)) for s in sites]
                                + [torch.tensor([float(self._seen)], dtype=torch.float64, device=device)])
        seen = counts.pop()
        return OrderedDict((s, (c / seen).cpu()) for s, c in zip(sites, counts))


def ridge_solutions(xx: torch.Tensor, xy: torch.Tensor, relative_lambdas: torch.Tensor) -> torch.Tensor:
    """Ridge solutions from augmented sums, for every λ at once.

    Args:
        xx: ``(P, d + 1, d + 1)`` sums ``Σ x̃x̃ᵀ`` (last coordinate the constant 1, so ``xx[:, -1, -1] = n``).
        xy: ``(P, d + 1, C)`` sums ``Σ x̃yᵀ``.
        relative_lambdas: ``(L,)``; ``λ = r · tr(Σ)/d`` with ``Σ`` the features' covariance times ``n``.

    Returns:
        ``(L, P, d + 1, C)``: ``[W; b]`` minimising ``Σ‖Wᵀx + b − y‖² + λ‖W‖²`` (bias unpenalised).
    """
    return torch.stack(list(_ridge_path(_Moments.of_sums([xx, xy, None]), relative_lambdas)))


class _Moments:
    """What one site's probes need of a split's images: the augmented features ``x̃ (n, P, d+1)`` and targets
    ``y (n, C)`` themselves while there are at most ``d + 1`` images, else their sums ``Σ x̃x̃ᵀ (P, d+1, d+1)``,
    ``Σ x̃yᵀ (P, d+1, C)`` and ``Σ‖y‖²``. Few-shot probes of wide layers (ViT-B/16's 197 tokens × 768
    features, a handful of images per class) thus keep ``n·(d+1)`` numbers per probe instead of ``(d+1)²``,
    and are solved from the ``n × n`` Gram matrix instead of a ``d × d`` eigendecomposition; both give the
    same ridge solutions."""

    def __init__(self, shape):
        self.shape = tuple(shape)                    # (P, d + 1)
        self.rows: list[torch.Tensor] | None = []
        self.targets: list[torch.Tensor] = []
        self.n = 0
        self._sums: list[torch.Tensor] | None = None

    @classmethod
    def of_sums(cls, sums):
        m = cls(sums[0].shape[:2])
        m.rows, m._sums = None, list(sums)
        return m

    @property
    def device(self):
        return (self._sums[0] if self.rows is None else self.rows[0]).device

    def add(self, x_aug: torch.Tensor, y: torch.Tensor) -> None:
        if self.rows is None:
            self._sums = [a + b for a, b in zip(self._sums, _sums_of(x_aug, y))]
            return
        self.rows.append(x_aug)
        self.targets.append(y)
        self.n += len(x_aug)
        if self.n > self.shape[-1]:                  # more images than features: the sums are smaller
            self.sums()

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.rows), torch.cat(self.targets)

    def sums(self) -> list[torch.Tensor]:
        if self.rows is not None:
            self._sums = _sums_of(*self.stacked())
            self.rows, self.targets = None, []
        return self._sums

    def squared_error(self, w: torch.Tensor) -> torch.Tensor:
        """Mean over these images of ``‖x̃ᵀw − y‖²`` for each probe's ``w (P, d+1, C)``: ``(P,)``."""
        if self.rows is not None:
            x, y = self.stacked()
            return (torch.einsum("npi,pic->npc", x, w) - y[:, None, :]).square().sum((0, 2)) / len(x)
        a, b, yy = self._sums
        # tr(WᵀAW) − 2 tr(WᵀB) + Σ‖y‖², from the sums
        return (torch.einsum("pic,pij,pjc->p", w, a, w) - 2 * torch.einsum("pic,pic->p", w, b) + yy) / a[0, -1, -1]


def _sums_of(x_aug: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return [torch.einsum("bpi,bpj->pij", x_aug, x_aug), torch.einsum("bpi,bc->pic", x_aug, y),
            (y * y).sum().expand(1)]


def _ridge_path(fit: _Moments, relative_lambdas: torch.Tensor):
    """Yield the ridge solutions ``[W; b] (P, d + 1, C)`` of the fit images for each relative λ in turn (see
    :func:`ridge_solutions`), from one eigendecomposition: of the ``d × d`` centred covariance when ``fit``
    holds sums, of the ``n × n`` centred Gram matrix when it holds the rows (``W = X̃ᵀ(XXᵀ + λI)⁻¹Ỹ`` with
    centred ``X``, ``Y``: the same solution)."""
    if fit.rows is None:
        xx, xy = fit.sums()[:2]
        n = xx[:, -1, -1]                                                     # (P,)
        sx, sy = xx[:, :-1, -1], xy[:, -1, :]                                  # Σx (P, d), Σy (P, C)
        mean_x, mean_y = sx / n[:, None], sy / n[:, None]
        cov = xx[:, :-1, :-1] - n[:, None, None] * mean_x[:, :, None] * mean_x[:, None, :]   # centred Σ(x−x̄)(x−x̄)ᵀ
        cross = xy[:, :-1, :] - n[:, None, None] * mean_x[:, :, None] * mean_y[:, None, :]   # Σ(x−x̄)(y−ȳ)ᵀ
        d = cov.shape[-1]
        evals, evecs = torch.linalg.eigh(cov)                                  # one decomposition, every λ
        trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        proj = evecs.transpose(-1, -2) @ cross                                 # (P, d, C)
        del cov, cross
    else:
        x_aug, y = fit.stacked()
        x = x_aug[..., :-1]                                                    # (n, P, d)
        d = x.shape[-1]
        mean_x, mean_y = x.mean(0), y.mean(0).expand(x.shape[1], -1)           # (P, d), (P, C)
        xc, yc = x - mean_x, y - y.mean(0)                                     # centred (n, P, d), (n, C)
        gram = torch.einsum("ipd,jpd->pij", xc, xc)                            # (P, n, n)
        evals, evecs = torch.linalg.eigh(gram)
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        proj = evecs.transpose(-1, -2) @ yc                                    # (P, n, C)
    evals = evals.clamp_min(0)                                                 # round-off below 0 on a PSD sum
    scale = trace / d                                                          # (P,) mean variance × n
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    for r in relative_lambdas:
        shrunk = evecs @ (proj / (evals + r * scale[:, None])[..., None])     # (P, d or n, C)
        w = shrunk if fit.rows is None else torch.einsum("ipd,pic->pdc", xc, shrunk)   # (P, d, C)
        b = mean_y - torch.einsum("pd,pdc->pc", mean_x, w)                     # (P, C)
        yield torch.cat([w, b[:, None, :]], dim=1)


def aggregate(features: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int] | None = None,
              aggregations: Sequence[str] = AGGREGATIONS) -> OrderedDict[str, torch.Tensor]:
    """Probe inputs ``{aggregation: (B, P, d)}`` from one layer's features.

    Args:
        features: ViT tokens ``(B, N, D)`` (prefix tokens first) or a CNN map ``(B, C, H, W)``; a map is
            average-pooled to ``grid`` (the last stage's size, as in the paper) and its positions are tokens.
        aggregations: any of ``"first"`` (token 0: the CLS token of a CLS model), ``"gap"`` (mean of all
            tokens), ``"gap_spatial"`` (mean of the non-prefix tokens) and ``"tokens"`` (one probe per token,
            ``P = N``); for a map ``"first"`` is not defined and ``"gap_spatial"`` equals ``"gap"``.
    """
    unknown = set(aggregations) - set(AGGREGATIONS)
    if unknown:
        raise ValueError(f"unknown aggregation(s) {sorted(unknown)}; choose from {AGGREGATIONS}")
    if features.ndim == 4:
        if grid is not None:
            features = F.adaptive_avg_pool2d(features.float(), grid)
        tokens, num_prefix_tokens = features.flatten(2).transpose(1, 2), 0
        if "first" in aggregations:
            raise ValueError("aggregation 'first' is defined for token sequences, not CNN feature maps")
    elif features.ndim == 3:
        tokens = features
        if not 0 <= num_prefix_tokens < tokens.shape[1]:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens} for {tokens.shape[1]} tokens")
    else:
        raise ValueError(f"features must be (B, N, D) tokens or a (B, C, H, W) map, got {tuple(features.shape)}")
    out = OrderedDict()
    for name in aggregations:
        if name == "first":
            out[name] = tokens[:, :1]
        elif name == "gap":
            out[name] = tokens.mean(1, keepdim=True)
        elif name == "gap_spatial":
            out[name] = tokens[:, num_prefix_tokens:].mean(1, keepdim=True)
        else:
            out[name] = tokens
    return out


@dataclass
class ProbeResult:
    """Test accuracies of a model's probes.

    Attributes:
        layers: probed layer names, in execution order.
        accuracy: ``{aggregation: (layers, P) float64}`` (``P = 1`` for aggregates, tokens for ``"tokens"``).
        relative_lambda: the chosen ``λ / (tr Σ / d)`` per probe, same shapes.
        n_fit, n_val, n_test: images used to fit, choose λ, and score.
    """
    layers: list[str]
    accuracy: dict[str, torch.Tensor]
    relative_lambda: dict[str, torch.Tensor]
    n_fit: int
    n_val: int
    n_test: int


def probe_layers(model: torch.nn.Module, layers: Sequence[str], fit: Iterable, val: Iterable, test: Iterable,
                 num_classes: int, aggregations: Sequence[str] = AGGREGATIONS, pool_grid=None,
                 device: str | torch.device = "cpu", progress: bool = True) -> ProbeResult:
    """Fit and score probes on ``layers`` of ``model`` for every aggregation.

    Args:
        fit, val, test: raw ``(images, labels)`` minibatches (the model's preprocessing is applied): the
            probes' training images, the held-out training images that choose λ, and the test images.
        num_classes: number of classes ``C``.
        pool_grid: CNN maps are average-pooled to this ``(h, w)`` (default: the smallest map among
            ``layers``, i.e. the last stage's size).
        aggregations: see :func:`aggregate`; ``"first"`` is skipped for CNN maps.

    Memory: per-token probes keep ``2 · tokens · (d+1)²`` float64 sums per layer (ViT-B/16: ~1.9 GB a
    layer); probe aggregates only for large models.
    """
    num_prefix = getattr(model, "num_prefix_tokens", 0)
    probes = RidgeProbes(num_classes, device=device)
    counts = {}

    def sites(feats):
        nonlocal pool_grid
        if pool_grid is None:
            maps = [f.shape[-2:] for f in feats.values() if f.ndim == 4]
            pool_grid = tuple(min(maps)) if maps else None
        out = OrderedDict()
        for layer in layers:
            f = feats[layer]
            aggs = [a for a in aggregations if not (a == "first" and f.ndim == 4)]
            for agg, x in aggregate(f, num_prefix, pool_grid, aggs).items():
                out[f"{layer}/{agg}"] = x
        return out

    for split, batches in (("fit", fit), ("val", val), ("test", test)):
        if split == "test":
            probes.solve()
        n = 0
        for feats, labels in tqdm(iter_features(model, batches, list(layers), device=device),
                                  desc=f"probes: {split}", disable=not progress, leave=False,
                                  total=len(batches) if hasattr(batches, "__len__") else None):
            x = sites(feats)
            probes.score(x, labels) if split == "test" else probes.update(split, x, labels)
            n += labels.shape[0]
        counts[split] = int(all_reduce_sum([torch.tensor(float(n))])[0].item())
    accs = probes.accuracy()
    accuracy, lambdas = {}, {}
    for agg in aggregations:
        keys = [f"{layer}/{agg}" for layer in layers if f"{layer}/{agg}" in accs]
        if keys:
            accuracy[agg] = torch.stack([accs[k] for k in keys])
            lambdas[agg] = torch.stack([probes.chosen[k] for k in keys])
    return ProbeResult(list(layers), accuracy, lambdas, counts["fit"], counts["val"], counts["test"])


# ---------------------------------------------------------------------------------------------------------
# Probes of the chapters: per-model block probes (paper Figs 11 and 13) and their summaries.

def probe_aggregations(model: torch.nn.Module) -> tuple[str, ...]:
    """The probe inputs of paper Fig 11 for ``model``: for a model with prefix tokens (a CLS ViT), the CLS
    token (``"first"``), the mean of the spatial tokens (``"gap_spatial"``) and one probe per token
    (``"tokens"``); for a GAP ViT or a CNN, the global average (``"gap"``) and one probe per token."""
    if getattr(model, "num_prefix_tokens", 0) > 0:
        return ("first", "gap_spatial", "tokens")
    return ("gap", "tokens")


def count_classes(batches: Iterable) -> int:
    """``1 +`` the largest label in raw ``(images, labels)`` batches (the probes' fit set, which holds
    every class)."""
    labels = [int(y.max()) for _, y in batches if len(y)]
    if not labels:
        raise ValueError("no labelled batches to count classes from")
    return 1 + max(labels)


def spatial_probes(model: torch.nn.Module, fit: Iterable, val: Iterable, test: Iterable,
                   layers: list[str] | None = None, num_classes: int | None = None,
                   device: str | torch.device = "cpu", progress: bool = False,
                   aggregations: Sequence[str] | None = None) -> ProbeResult:
    """Linear probes of paper Fig 11 at every block output of ``model`` (:func:`~vitcnn_utils.hooks.block_outputs`
    unless ``layers`` is given), with the aggregations of :func:`probe_aggregations`; CNN maps are pooled to
    the last stage's grid. ``num_classes`` defaults to ``1 + the largest label in fit`` (every class has
    training shots). Returns a :class:`~vitcnn_utils.probes.ProbeResult`.

    ``aggregations`` overrides :func:`probe_aggregations` (e.g. ``("first",)`` for the CLS token alone, as
    :func:`block_probes` does)."""
    if num_classes is None:
        num_classes = count_classes(fit)
    return probe_layers(model, layers or block_outputs(model), fit, val, test, num_classes,
                        aggregations=aggregations or probe_aggregations(model), device=device, progress=progress)


def block_probes(models: Mapping[str, torch.nn.Module], fit, val, test, num_classes: int, aggregation: str,
                 device: str | torch.device = "cpu", progress: bool = False) -> dict[str, torch.Tensor]:
    """Linear-probe test accuracy at every block output of every model
    (:func:`~vitcnn_utils.probes.probe_layers` with one aggregation: ``"first"`` = the CLS token of a CLS
    ViT, ``"gap"`` = the mean over tokens / positions of a ResNet).

    Returns:
        ``{label: (blocks,) float64}`` accuracies in [0, 1], block order as
        :func:`~vitcnn_utils.hooks.block_layers` without the input layer.
    """
    out = {}
    for label, model in models.items():
        result = spatial_probes(model, fit, val, test, num_classes=num_classes, device=device, progress=progress,
                                aggregations=(aggregation,))
        out[label] = result.accuracy[aggregation][:, 0].clone()
    return out


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


def data_scale_numbers(matched: Mapping[str, torch.Tensor], accuracy: Mapping[str, torch.Tensor],
                       with_input: bool = True) -> dict:
    """The numbers of the data-scale comparison for one architecture.

    Args:
        matched: ``{label: (L,)}`` matched-layer CKA with the reference model
            (:func:`~vitcnn_utils.cka.matched_layer_cka`), the first entry being the input layer when
            ``with_input``.
        accuracy: ``{label: (blocks,)}`` probe accuracies in [0, 1] (:func:`block_probes`), reference included.

    Returns:
        A dict of plain floats / lists: ``cka_input`` (layer 0, or None), ``cka_per_block``,
        ``cka_first_block``, ``cka_last_block`` (``{label: ...}`` for every non-reference model),
        ``probe_per_block`` and ``probe_mid`` (``{label: ...}`` for every model), ``mid_index`` (the block
        nearest normalised depth 0.5, :func:`~vitcnn_utils.hooks.middle_index`) and ``mid_depth`` (its
        normalised depth).
    """
    start = 1 if with_input else 0
    blocks = {label: values[start:].tolist() for label, values in matched.items()}
    n_blocks = {len(v) for v in accuracy.values()}
    if len(n_blocks) != 1:
        raise ValueError(f"models have different numbers of probed blocks: {sorted(n_blocks)}")
    n = n_blocks.pop()
    mid = middle_index(n)
    return {"cka_input": {label: values[0].item() if with_input else None for label, values in matched.items()},
            "cka_per_block": blocks,
            "cka_first_block": {label: v[0] for label, v in blocks.items()},
            "cka_last_block": {label: v[-1] for label, v in blocks.items()},
            "probe_per_block": {label: v.tolist() for label, v in accuracy.items()},
            "probe_mid": {label: v[mid].item() for label, v in accuracy.items()},
            "mid_index": mid, "mid_depth": normalised_depth(n)[mid].item()}

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

The maths on feature tensors; the model runs are :func:`vitcnn_utils.measure.probe_layers` and
:func:`vitcnn_utils.measure.spatial_probes`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum

RELATIVE_LAMBDAS = tuple(10.0 ** k for k in range(-6, 4))
AGGREGATIONS = ("first", "gap", "gap_spatial", "tokens")


def signed_one_hot(labels: torch.Tensor, num_classes: int, dtype=torch.float64) -> torch.Tensor:
    """``(B,)`` integer labels → ``(B, C)`` targets, ``+1`` at the class and ``−1`` elsewhere."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be (B,), got {tuple(labels.shape)}")
    _require_integer(labels)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return 2 * F.one_hot(labels.long(), num_classes).to(dtype) - 1     # any integer dtype


def _require_integer(labels: torch.Tensor) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype} (pass labels.long())")


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
            raise ValueError(f"num_classes must be at least 2, got {num_classes}: a probe separates classes (if "
                             "num_classes was counted from the fit labels, as spatial_probes does without "
                             "num_classes, the fit set holds a single class: fit on images of every class)")
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
        _require_integer(labels)
        if labels.ndim == 1 and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"site {site!r}: labels range over [{int(labels.min())}, {int(labels.max())}], but the "
                             f"probes are for {self.num_classes} classes (0 to {self.num_classes - 1}); if "
                             "num_classes was counted from the fit labels (1 + the largest), a class is missing from "
                             "the fit set: fit on every class, or pass num_classes")
        x = x.to(self.device, torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError(f"site {site!r}: the features contain NaN or inf values; probes need finite features")
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
        if not self.weights:
            raise RuntimeError("call solve() (and score()) before accuracy()")
        sites = list(self.weights)
        device = self.weights[sites[0]].device
        counts = all_reduce_sum([self._correct.get(s, torch.zeros(len(self.chosen[s]), dtype=torch.float64,
                                                                   device=device)) for s in sites]
                                + [torch.tensor([float(self._seen)], dtype=torch.float64, device=device)])
        seen = counts.pop()
        if not seen.item():                              # on every process: the sums are all-reduced
            raise RuntimeError("no test batches were scored (on any process): call score() before accuracy()")
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
              aggregations: Sequence[str] = AGGREGATIONS, class_token: bool | None = None
              ) -> OrderedDict[str, torch.Tensor]:
    """Probe inputs ``{aggregation: (B, P, d)}`` from one layer's features.

    Args:
        features: ViT tokens ``(B, N, D)`` (prefix tokens first) or a CNN map ``(B, C, H, W)``; a map is
            average-pooled to ``grid`` (the last stage's size, as in the paper) and its positions are tokens.
        aggregations: any of ``"first"`` (token 0: the CLS token of a CLS model), ``"gap"`` (mean of all
            tokens), ``"gap_spatial"`` (mean of the non-prefix tokens) and ``"tokens"`` (one probe per token,
            ``P = N``); for a map ``"first"`` is not defined and ``"gap_spatial"`` equals ``"gap"``.
        class_token: whether token 0 is a class (CLS) token (timm: ``model.has_class_token``). ``False``
            refuses ``"first"``: without a class token, token 0 is a register token or a patch. ``None``
            (unknown, the default) reads token 0 as asked.
    """
    unknown = set(aggregations) - set(AGGREGATIONS)
    if unknown:
        raise ValueError(f"unknown aggregation(s) {sorted(unknown)}; choose from {AGGREGATIONS}")
    if "first" in aggregations and class_token is False and features.ndim == 3:
        token0 = "a register token" if num_prefix_tokens > 0 else "a patch token"
        raise ValueError(f"aggregation 'first' reads the class (CLS) token, but the model has no class token (its "
                         f"token 0 is {token0}): use 'gap_spatial', 'gap' or 'tokens'")
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


# ---------------------------------------------------------------------------------------------------------
# Probes of the chapters: per-model block probes (paper Figs 11 and 13) and their summaries.

"""Baselines a CKA number can be read against (no model needed).

:func:`estimator_bias` measures the CKA of two *independent* Gaussian feature matrices of the same ``n`` examples
as their width grows, with the biased estimator of Kornblith et al. (2019) and with the unbiased-HSIC
estimator this project uses (:func:`vitcnn_utils.cka.linear_cka` with ``unbiased=False`` / ``True``). The two
representations share nothing, so the true CKA is 0; the biased estimator nevertheless drifts towards 1 once
the width approaches and exceeds ``n`` (each centred Gram matrix tends to a multiple of the centring matrix,
and any two of those are perfectly aligned), while the unbiased one scatters around 0 at every width.

:func:`write_background_figure` draws it for the book's background chapter (``book/background.md``); the
Sphinx extension :mod:`vitcnn_utils.tools.sphinx_chapters` calls it before Sphinx reads any page, so the figure
exists in every build whichever chapters were executed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .cka import linear_cka

WIDTHS = (1, 4, 16, 64, 256, 1024, 4096)
N_EXAMPLES = 256
SEEDS = (0, 1, 2, 3, 4)
FIGURE = "cka_estimator_bias"          # the PNG's name (book/chapters/figures/cka_estimator_bias.png)


@dataclass
class EstimatorBias:
    """Linear CKA of independent random features: ``biased[i, j]`` / ``unbiased[i, j]`` is the value for seed
    ``seeds[i]`` at width ``widths[j]`` (float64 tensors ``(seeds, widths)``), all on ``n`` examples."""
    widths: list[int]
    n: int
    seeds: list[int]
    biased: torch.Tensor
    unbiased: torch.Tensor

    def mean(self, estimator: str) -> torch.Tensor:
        """Mean over the seeds per width; ``estimator`` is ``"biased"`` or ``"unbiased"``."""
        return getattr(self, estimator).mean(0)

    def sd(self, estimator: str) -> torch.Tensor:
        """Sample standard deviation over the seeds per width (0 for one seed)."""
        values = getattr(self, estimator)
        return values.std(0) if len(self.seeds) > 1 else torch.zeros(len(self.widths), dtype=values.dtype)

    def se(self, estimator: str) -> torch.Tensor:
        """Standard error of the mean over the seeds per width."""
        return self.sd(estimator) / len(self.seeds) ** 0.5

    def summary(self) -> str:
        """One sentence with the values at the smallest and largest width (mean ± SD over the seeds)."""
        def at(estimator, j):
            return f"{self.mean(estimator)[j].item():.3f} ± {self.sd(estimator)[j].item():.3f}"
        lo, hi = 0, len(self.widths) - 1
        return (f"Independent Gaussian features of n = {self.n} examples ({len(self.seeds)} seeds): biased CKA "
                f"{at('biased', lo)} at width {self.widths[lo]}, {at('biased', hi)} at width {self.widths[hi]}; "
                f"unbiased CKA {at('unbiased', lo)} and {at('unbiased', hi)}.")


def random_features(n: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard-Gaussian float64 matrices ``(n, width)`` from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, width, generator=generator, dtype=torch.float64),
            torch.randn(n, width, generator=generator, dtype=torch.float64))


def estimator_bias(widths: Sequence[int] = WIDTHS, n: int = N_EXAMPLES, seeds: Sequence[int] = SEEDS
                   ) -> EstimatorBias:
    """Biased and unbiased linear CKA of two independent Gaussian representations of ``n`` examples at each
    width of ``widths`` (both representations that wide), for each seed of ``seeds``.

    Per seed, one pair of ``(n, max(widths))`` matrices is drawn and width ``w`` uses their first ``w``
    columns (nested features: along one seed the width is the only thing that changes).

    Raises:
        ValueError: ``n < 4`` (the unbiased estimator needs at least 4 examples), no seeds, or a width below 1.
    """
    widths, seeds = [int(w) for w in widths], [int(s) for s in seeds]
    if n < 4:
        raise ValueError(f"n must be at least 4 (the unbiased HSIC estimator needs 4 examples), got {n}")
    if not seeds:
        raise ValueError("give at least one seed")
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}")
    biased = torch.empty(len(seeds), len(widths), dtype=torch.float64)
    unbiased = torch.empty_like(biased)
    for i, seed in enumerate(seeds):
        x, y = random_features(n, max(widths), seed)
        for j, w in enumerate(widths):
            biased[i, j] = linear_cka(x[:, :w], y[:, :w], unbiased=False)
            unbiased[i, j] = linear_cka(x[:, :w], y[:, :w], unbiased=True)
    return EstimatorBias(widths=widths, n=n, seeds=seeds, biased=biased, unbiased=unbiased)


def write_background_figure(folder: str | Path, result: EstimatorBias | None = None) -> Path:
    """Draw :func:`estimator_bias` (default widths, ``n`` and seeds unless ``result`` is given) with
    :func:`vitcnn_utils.plotting.cka_estimator_bias` and save it as ``folder/cka_estimator_bias.png``."""
    import matplotlib
    from matplotlib.figure import Figure

    from . import plotting

    result = estimator_bias() if result is None else result
    with matplotlib.rc_context():                       # the book's style without changing the caller's
        plotting.setup()
        fig = Figure(figsize=(6.4, 3.8), layout="constrained")   # no pyplot: no backend, no window (Sphinx)
        plotting.cka_estimator_bias(fig.subplots(), result)
        return plotting.save(fig, FIGURE, folder)

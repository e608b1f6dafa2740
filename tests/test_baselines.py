"""vitcnn_utils.baselines: biased vs unbiased CKA of independent random features as the width grows at fixed n (the
background chapter's figure), and the Sphinx hook that draws that figure in every build."""
import re
from types import SimpleNamespace

import matplotlib
import pytest
import torch

from vitcnn_utils import baselines
from vitcnn_utils.cka import linear_cka
from vitcnn_utils.tools import book, sphinx_chapters


@pytest.fixture(scope="module")
def default():
    return baselines.estimator_bias()              # widths 1..4096, n = 256, seeds 0..4: about a second


def test_values_are_linear_cka_of_nested_independent_features():
    result = baselines.estimator_bias(widths=[1, 16, 256], n=64, seeds=(3, 7))
    assert result.biased.shape == result.unbiased.shape == (2, 3) and result.n == 64
    for i, seed in enumerate((3, 7)):
        x, y = baselines.random_features(64, 256, seed)
        assert x.shape == y.shape == (64, 256) and not torch.equal(x, y)
        for j, w in enumerate((1, 16, 256)):
            assert result.biased[i, j].item() == linear_cka(x[:, :w], y[:, :w], unbiased=False)
            assert result.unbiased[i, j].item() == linear_cka(x[:, :w], y[:, :w], unbiased=True)
    assert torch.allclose(result.se("biased"), result.biased.std(0) / 2 ** 0.5)


def test_unbiased_stays_near_zero_while_biased_drifts_towards_one(default):
    assert default.widths == [1, 4, 16, 64, 256, 1024, 4096] and default.n == 256 and len(default.seeds) == 5
    mean, se = default.mean("unbiased"), default.se("unbiased")
    assert (mean.abs() <= 4 * se).all(), (mean, se)           # within a few standard errors of 0 at every width
    assert (default.unbiased.abs() < 0.03).all()
    for row in default.biased:                                 # on each fixed seed: rising with the width
        assert (row[1:] > row[:-1]).all(), row
    assert default.biased[:, 0].max() < 0.02 and default.biased[:, -1].min() > 0.9
    widths = torch.tensor(default.widths, dtype=torch.float64)
    assert torch.allclose(default.mean("biased"), widths / (widths + default.n), atol=0.03)   # ≈ w / (w + n)
    text = default.summary()
    assert "n = 256" in text and f"{default.mean('biased')[-1].item():.3f}" in text


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 4"):
        baselines.estimator_bias(n=3)
    with pytest.raises(ValueError, match="positive"):
        baselines.estimator_bias(widths=[0, 4])
    with pytest.raises(ValueError, match="seed"):
        baselines.estimator_bias(seeds=())


def test_sphinx_hook_draws_the_figure_the_background_page_includes(tmp_path, default, monkeypatch):
    """The figure is drawn by the _config.yml extension in every build (not by a chapter, which may be skipped or
    be a placeholder), where book/background.md's figure directive points."""
    monkeypatch.setattr(baselines, "estimator_bias", lambda: default)
    before = dict(matplotlib.rcParams)
    sphinx_chapters.background_figures(SimpleNamespace(srcdir=str(tmp_path)), None)
    assert dict(matplotlib.rcParams) == before                  # the book's style did not leak into the caller
    png = tmp_path / sphinx_chapters.FIGURES_DIR / f"{baselines.FIGURE}.png"
    assert png.is_file() and png.stat().st_size > 10_000
    page = (book.ROOT / "book" / "background.md").read_text()
    included = re.findall(r"```\{figure\} (\S+)", page)
    assert included == [f"chapters/figures/{baselines.FIGURE}.png"]
    assert (tmp_path / "book" / included[0]).resolve() == png.resolve()

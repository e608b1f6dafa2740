"""One visual style for every figure of the book (seaborn/matplotlib), and saving figures as PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

MODEL_COLOURS = {"vit": "#3b6fb6", "resnet": "#d1495b", "vit-gap": "#2e9e6e"}


def setup() -> None:
    """Apply the book's style."""
    sns.set_theme(context="notebook", style="whitegrid", palette="deep", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "savefig.bbox": "tight",
                         "axes.titleweight": "bold", "image.cmap": "magma"})


def save(fig, name: str, folder: str | Path) -> Path:
    """Save ``fig`` as ``folder/name.png`` and return the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path)
    return path


def _layer_ticks(ax, names, axis, every):
    idx = np.arange(0, len(names), every)
    getattr(ax, f"set_{axis}ticks")(idx + 0.5)
    getattr(ax, f"set_{axis}ticklabels")([names[i] for i in idx], fontsize=7,
                                         rotation=90 if axis == "x" else 0)


def cka_heatmap(ax, matrix, row_names, col_names, title: str, row_label: str, col_label: str,
                vmin: float = 0.0, vmax: float = 1.0, tick_every: int | None = None, colorbar: bool = True):
    """CKA heatmap with layer 0 at the bottom-left (as in the paper); rows on the y axis."""
    matrix = np.asarray(matrix, dtype=float)
    sns.heatmap(matrix, ax=ax, vmin=vmin, vmax=vmax, cmap="magma", square=matrix.shape[0] == matrix.shape[1],
                cbar=colorbar, cbar_kws={"label": "CKA", "shrink": 0.8}, xticklabels=False, yticklabels=False)
    ax.invert_yaxis()
    ax.grid(False)
    if np.isnan(matrix).any():
        ax.set_facecolor("#d9d9d9")                       # undefined CKA (constant layer): grey, not a colour
    _layer_ticks(ax, col_names, "x", tick_every or max(1, len(col_names) // 8))
    _layer_ticks(ax, row_names, "y", tick_every or max(1, len(row_names) // 8))
    ax.set_title(title)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    return ax


def head_distances(ax, distances, title: str, image_px: float):
    """Mean attention distance of each head (dots) per block (x)."""
    distances = np.asarray(distances, dtype=float)
    blocks, heads = distances.shape
    for h in range(heads):
        ax.scatter(np.arange(blocks), distances[:, h], s=28, alpha=0.85, label=f"head {h}")
    ax.set_xticks(range(blocks))
    ax.set_xlabel("block")
    ax.set_ylabel("mean attention distance (px)")
    ax.set_ylim(0, image_px * 0.75)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2, loc="lower right")
    return ax


def head_subset_cka(ax, result: dict, n_images: int):
    """CKA of first-block head subsets with other-model layers against the subsets' mean distance."""
    distance = np.asarray(result["distance"], dtype=float)
    cka = np.asarray(result["cka"], dtype=float)
    for j, layer in enumerate(result["layers"]):
        ax.plot(distance, cka[:, j], marker="o", label=layer)
    ax.set_xlabel("mean attention distance of the head(s) (px)")
    ax.set_ylabel("CKA with ResNet layer")
    ax.set_title(f"First-block heads vs ResNet lower layers ({n_images} test images)")
    ax.legend(fontsize=8, title="ResNet layer", title_fontsize=8)
    return ax


def receptive_fields(erfs: dict, ncols: int = 3, gamma: float = 0.3):
    """A grid of effective receptive fields (each normalised to max 1), on a power colour scale
    (``gamma`` < 1) so that gradients far below the centre's peak stay visible."""
    from matplotlib.colors import PowerNorm
    nrows = int(np.ceil(len(erfs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.1 * nrows), layout="constrained", squeeze=False)
    for ax, (name, erf) in zip(axes.flat, erfs.items()):
        im = ax.imshow(np.asarray(erf), cmap="magma", norm=PowerNorm(gamma, vmin=0, vmax=1))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    for ax in list(axes.flat)[len(erfs):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.7, label=f"|gradient| (normalised; power scale, γ = {gamma})")
    return fig

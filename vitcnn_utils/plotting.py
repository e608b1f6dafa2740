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


def data_fraction_colours(labels) -> dict:
    """One colour per amount of training data, in the order given (least data first): light orange through
    magenta and purple to dark blue (matplotlib's reversed ``plasma``), distinct hues that also darken with
    the data. Pass as ``colours=`` to :func:`matched_layer_cka` and :func:`probe_by_depth`."""
    labels = list(labels)
    cmap = plt.get_cmap("plasma_r")
    return {label: cmap(x) for label, x in zip(labels, np.linspace(0.22, 0.95, max(len(labels), 2)))}


_FRACTION_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def matched_layer_cka(ax, layer_names, curves: dict, title: str, reference_label: str, colours: dict | None = None):
    """CKA of each layer with the same layer of a reference model (one line per model), layers on the x axis
    labelled by name, first layer (the embedding / stem) on the left."""
    colours = colours or data_fraction_colours(curves)
    x = np.arange(len(layer_names))
    low = 0.0
    for i, (label, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=float)
        ax.plot(x, values, marker=_FRACTION_MARKERS[i % len(_FRACTION_MARKERS)], color=colours[label],
                lw=1.8, label=label)
        low = min(low, np.nanmin(values))
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels(layer_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(low - 0.03, 1.03)
    ax.set_xlabel("layer (block outputs; leftmost = embedding / stem)")
    ax.set_ylabel(f"CKA with the {reference_label} model")
    ax.set_title(title)
    ax.legend(title="training data", fontsize=8, title_fontsize=8, loc="lower left")
    return ax


def probe_by_depth(ax, curves: dict, title: str, chance: float | None = None, colours: dict | None = None):
    """Linear-probe test accuracy (in %) of each block output against normalised depth (0 = first block,
    1 = last), one line per model; ``curves`` maps a label to per-block accuracies in [0, 1]."""
    colours = colours or data_fraction_colours(curves)
    for i, (label, values) in enumerate(curves.items()):
        values = 100 * np.asarray(values, dtype=float)
        depth = np.arange(len(values)) / max(len(values) - 1, 1)
        ax.plot(depth, values, marker=_FRACTION_MARKERS[i % len(_FRACTION_MARKERS)], color=colours[label],
                lw=1.8, label=label)
    _probe_axes(ax, title, chance, "--")
    ax.legend(title="training data", fontsize=8, title_fontsize=8, loc="lower right")
    return ax


# -- skip connections (paper Figs 7-8) ------------------------------------------------------------------------
def _plain_log_labels(axis):
    """Label a log axis with plain numbers at 1, 2 and 5 times powers of ten (no 10^k notation)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def skip_ratio_heatmap(ax, ratios, row_names, title: str, num_prefix_tokens: int = 1):
    """ViT skip ratios ``‖z‖/‖f(z)‖`` per sublayer (rows, input at the bottom) and token (columns) on a log
    colour scale with a colour bar; token 0 is labelled CLS and set off by a line when ``num_prefix_tokens``.
    Non-finite or non-positive ratios are left out of the colour range."""
    from matplotlib.colors import LogNorm
    ratios = np.asarray(ratios, dtype=float)
    rows, tokens = ratios.shape
    finite = ratios[np.isfinite(ratios) & (ratios > 0)]
    im = ax.pcolormesh(np.arange(tokens + 1) - 0.5, np.arange(rows + 1) - 0.5, ratios, cmap="magma",
                       norm=LogNorm(vmin=finite.min(), vmax=finite.max()), shading="flat")
    cbar = ax.figure.colorbar(im, ax=ax, label="skip ratio ‖z‖ / ‖f(z)‖ (log scale)", shrink=0.85, pad=0.02)
    _plain_log_labels(cbar.ax.yaxis)
    ax.grid(False)
    ax.set_yticks(range(rows))
    ax.set_yticklabels(row_names, fontsize=7)
    step = max(1, (tokens - num_prefix_tokens) // 7)
    ticks = list(range(num_prefix_tokens + step - 1, tokens, step))       # patch ticks kept clear of CLS
    if num_prefix_tokens:
        ticks = [0] + ticks
        ax.axvline(num_prefix_tokens - 0.5, color="#5fd3f3", lw=1.5)
    ax.set_xticks(ticks)
    ax.set_xticklabels(["CLS" if (t == 0 and num_prefix_tokens) else str(t) for t in ticks], fontsize=8)
    ax.set_xlim(-0.5, tokens - 0.5)
    ax.set_ylim(-0.5, rows - 0.5)
    ax.set_xlabel("token (0 = CLS, then patches row by row)" if num_prefix_tokens else "token (patches row by row)")
    ax.set_ylabel("sublayer (input at the bottom)")
    ax.set_title(title)
    return ax


def skip_ratio_profile(ax, vit_profile: dict, resnet_depth, resnet_ratios, title: str):
    """Skip ratio against normalised depth on a log y axis: the ViT's CLS token and mean over patch tokens
    (``vit_profile`` from :func:`vitcnn_utils.skips.ratio_profile`) and the ResNet's per-unit ratio; a dotted
    line marks ratio 1 (identity path and branch equally large)."""
    depth = np.asarray(vit_profile["depth"], dtype=float)
    if vit_profile.get("cls") is not None:
        ax.plot(depth, np.asarray(vit_profile["cls"], dtype=float), marker="o", ms=4, color=MODEL_COLOURS["vit"],
                label="ViT, CLS token")
    ax.plot(depth, np.asarray(vit_profile["spatial"], dtype=float), marker="s", ms=4, ls="--",
            color=MODEL_COLOURS["vit"], alpha=0.75, label="ViT, mean of patch tokens")
    ax.plot(np.asarray(resnet_depth, dtype=float), np.asarray(resnet_ratios, dtype=float), marker="^", ms=5,
            color=MODEL_COLOURS["resnet"], label="ResNet, per unit")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_yscale("log")
    _plain_log_labels(ax.yaxis)
    ax.set_xlabel("normalised depth (0 = first sublayer / unit, 1 = last)")
    ax.set_ylabel("skip ratio ‖z‖ / ‖f(z)‖ (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def no_skip_heatmaps(panels: list, suptitle: str):
    """One row of within-model CKA heatmaps with one shared colour bar. Each panel is a dict with
    ``matrix``, ``names``, ``title`` and optionally ``block``: the layers of that ViT block are framed
    by dashed lines (where a heatmap of a ViT without that block's skips should split)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels) + 1.0, 4.6), layout="constrained",
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        names = panel["names"]
        cka_heatmap(ax, panel["matrix"], names, names, panel["title"], "layer", "layer",
                    tick_every=max(1, len(names) // 6), colorbar=False)
        ax.title.set_fontsize(9.5)
        block = panel.get("block")
        if block is not None:
            inside = [k for k, n in enumerate(names) if n == f"blocks.{block}" or n.startswith(f"blocks.{block}.")]
            for edge in (inside[0], inside[-1] + 1):
                ax.axvline(edge, color="#5fd3f3", lw=1, ls="--")
                ax.axhline(edge, color="#5fd3f3", lw=1, ls="--")
    fig.colorbar(axes[0, 0].collections[0], ax=axes[0].tolist(), shrink=0.8, label="CKA")
    fig.suptitle(suptitle)
    return fig


# -- spatial information (paper Figs 9-11) --------------------------------------------------------------------
def token_patch_maps(maps: dict, positions, title: str, colours_label: str = "CKA of token with input patch"):
    """Token–patch CKA heatmaps: rows = models (``maps`` label -> ``(K, gh, gw)``), columns = the ``K`` token
    ``positions`` ``(row, col)``; each panel shows the token's CKA with the input patch at every grid
    position (image orientation: row 0 at the top), the token's own position outlined; one shared colour
    bar."""
    from matplotlib.patches import Rectangle
    labels = list(maps)
    arrays = [np.asarray(maps[m], dtype=float) for m in labels]
    positions = [tuple(int(v) for v in p) for p in positions]
    vmin = min(0.0, min(float(np.nanmin(a)) for a in arrays))
    vmax = max(float(np.nanmax(a)) for a in arrays)
    nrows, ncols = len(labels), len(positions)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.35 * ncols + 1.2, 2.3 * nrows + 0.5), layout="constrained",
                             squeeze=False)
    for i, (label, array) in enumerate(zip(labels, arrays)):
        gh, gw = array.shape[-2:]
        for j, (r, c) in enumerate(positions):
            ax = axes[i, j]
            im = ax.imshow(array[j], cmap="magma", vmin=vmin, vmax=vmax)
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#5fd3f3", lw=2.2))
            ax.grid(False)
            ax.set_xticks(range(0, gw, 2))
            ax.set_yticks(range(0, gh, 2))
            ax.tick_params(labelsize=7, length=2)
            if i == 0:
                ax.set_title(f"token at (row {r}, col {c})", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{label}\npatch row", fontsize=9)
            if i == nrows - 1:
                ax.set_xlabel("patch column", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label=colours_label)
    fig.suptitle(title)
    return fig


_PROBE_KIND_STYLE = {"cls": ("-", "o", "CLS token"), "gap": ("-", "s", "GAP (mean of all tokens)"),
                     "spatial_gap": ("--", "^", "mean of spatial tokens"),
                     "tokens": (":", "v", "single spatial tokens (mean accuracy)"),
                     "first": ("-", "o", "first token")}


def spatial_probe_curves(ax, depth: dict, curves: dict, title: str, colours: dict | None = None,
                         chance: float | None = None):
    """Linear-probe test accuracy (%) against normalised depth: ``curves`` maps a model label to
    ``{kind: (layers,) accuracies in [0, 1]}`` (kinds ``cls``, ``gap``, ``spatial_gap``, ``tokens``) and
    ``depth`` a model label to the ``(layers,)`` x positions. Colour = model, line style and marker = kind;
    the legend sits to the right of the axes."""
    colours = colours or dict(zip(curves, sns.color_palette("deep", len(curves))))
    for model, kinds in curves.items():
        x = np.asarray(depth[model], dtype=float)
        for kind, values in kinds.items():
            style, marker, text = _PROBE_KIND_STYLE.get(kind, ("-.", "x", kind))
            ax.plot(x, 100 * np.asarray(values, dtype=float), ls=style, marker=marker, color=colours[model],
                    lw=1.8, ms=5, label=f"{model}: {text}")
    _probe_axes(ax, title, chance, "-.")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return ax


def _probe_axes(ax, title: str, chance: float | None, chance_style: str) -> None:
    """Shared axes of the probe-accuracy plots: depth in [0, 1], accuracy in %, a chance line."""
    if chance is not None:
        ax.axhline(100 * chance, color="0.5", lw=1, ls=chance_style, label="chance")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, 100)
    ax.set_xlabel("normalised depth (0 = first block, 1 = last)")
    ax.set_ylabel("linear-probe test accuracy (%)")
    ax.set_title(title)

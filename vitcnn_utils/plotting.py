"""One visual style for every figure of the book (seaborn/matplotlib), and saving figures as PNG."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

MODEL_COLOURS = {"vit": "#3b6fb6", "resnet": "#d1495b", "vit-gap": "#2e9e6e"}
DARK_LABEL = {"facecolor": "black", "alpha": 0.65, "pad": 2.0, "linewidth": 0}   # white text legible on pale cells


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
    the data. Pass as ``colours=`` to :func:`matched_layer_curves_over_draws` and :func:`probe_by_depth_over_draws`."""
    labels = list(labels)
    cmap = plt.get_cmap("plasma_r")
    return {label: cmap(x) for label, x in zip(labels, np.linspace(0.22, 0.95, max(len(labels), 2)))}


_FRACTION_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


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


# -- spatial information (paper Figs 9-11) --------------------------------------------------------------------
def token_patch_maps(maps: dict, positions, title: str, colours_label: str = "CKA of token with input patch"):
    """Token–patch CKA heatmaps: rows = models (``maps`` label -> ``(K, gh, gw)``), columns = the ``K`` token
    ``positions`` ``(row, col)``; each panel shows the token's CKA with the input patch at every grid
    position (image orientation: row 0 at the top), the token's own position outlined; one shared colour
    bar. ``positions`` is one list for all models, or ``{label: list}`` for models whose grids differ (e.g.
    ViT-B/16's 14×14 tokens and ResNet-50's 7×7 map); column titles name the first model's positions."""
    from matplotlib.patches import Rectangle
    labels = list(maps)
    arrays = [np.asarray(maps[m], dtype=float) for m in labels]
    per_model = positions if isinstance(positions, dict) else dict.fromkeys(labels, positions)
    per_model = {m: [tuple(int(v) for v in p) for p in per_model[m]] for m in labels}
    positions = per_model[labels[0]]
    vmin = min(0.0, min(float(np.nanmin(a)) for a in arrays))
    vmax = max(float(np.nanmax(a)) for a in arrays)
    nrows, ncols = len(labels), len(positions)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.35 * ncols + 1.2, 2.3 * nrows + 0.5), layout="constrained",
                             squeeze=False)
    for i, (label, array) in enumerate(zip(labels, arrays)):
        gh, gw = array.shape[-2:]
        for j, (r, c) in enumerate(per_model[label]):
            ax = axes[i, j]
            im = ax.imshow(array[j], cmap="magma", vmin=vmin, vmax=vmax)
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#5fd3f3", lw=2.2))
            ax.grid(False)
            ax.set_xticks(range(0, gw, 2))
            ax.set_yticks(range(0, gh, 2))
            ax.tick_params(labelsize=7, length=2)
            if i == 0:
                ax.set_title(f"token at (row {r}, col {c})", fontsize=9)
            elif per_model[label] != positions:
                ax.set_title(f"its token at ({r}, {c})", fontsize=8)
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


# -- local and global information (paper Figs 3-6) and the recipe ablation ----------------------------------
def head_distances_over_draws(ax, distances, title: str, uniform: float, local_fraction: float,
                              global_fraction: float | None = None, ymax: float | None = None):
    """Mean attention distance of every head per block, from ``distances`` ``[draw][block][head]`` (px): each
    head a dot at its mean over draws with an error bar of ± one SD over draws (a block's heads side by side),
    and reference lines at the uniform-attention distance ``uniform`` and at the local threshold
    ``local_fraction × uniform`` (and the global threshold when ``global_fraction`` is given)."""
    d = np.asarray(distances, dtype=float)
    mean = d.mean(0)
    sd = d.std(0, ddof=1) if len(d) > 1 else np.zeros_like(mean)
    blocks, heads = mean.shape
    offsets = np.linspace(-0.27, 0.27, heads) if heads > 1 else np.zeros(1)
    colours = sns.color_palette("deep", heads)
    for h in range(heads):
        ax.errorbar(np.arange(blocks) + offsets[h], mean[:, h], yerr=sd[:, h], fmt="o", ms=4.5, capsize=2.5,
                    elinewidth=1, color=colours[h], label=f"head {h}")
    ax.axhline(uniform, color="0.3", ls="--", lw=1.1, label=f"uniform attention ({uniform:.1f} px)")
    if global_fraction is not None:
        ax.axhline(global_fraction * uniform, color="0.55", ls="-.", lw=0.9,
                   label=f"global above {global_fraction:g}× uniform ({global_fraction * uniform:.1f} px)")
    ax.axhline(local_fraction * uniform, color=MODEL_COLOURS["resnet"], ls=":", lw=1.5,
               label=f"local below {local_fraction:g}× uniform ({local_fraction * uniform:.1f} px)")
    ax.set_xticks(range(blocks))
    ax.set_xlim(-0.6, blocks - 0.4)
    ax.set_ylim(0, ymax if ymax is not None else 1.35 * max(uniform, float(np.nanmax(mean + sd))))
    ax.set_xlabel("block (input → output)")
    ax.set_ylabel("mean attention distance (px)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2, loc="lower right", framealpha=0.9)
    return ax


def head_cka_over_draws(ax, distance, cka, layers, title: str, uniform: float | None = None):
    """CKA of single heads with other-model layers against the heads' mean attention distance, over draws:
    ``distance`` ``[draw][head]`` (px) and ``cka`` ``[draw][head][layer]``. One colour per layer, one marker
    shape per head (two heads at the same distance stay apart: their layers are dodged sideways by a few
    hundredths of the axis), not joined (the heads are not a sequence); error bars ± one SD over draws in both
    directions; a dashed line at the uniform-attention distance when ``uniform`` is given."""
    from matplotlib.lines import Line2D
    dist, c = np.asarray(distance, dtype=float), np.asarray(cka, dtype=float)
    ddof = 1 if len(dist) > 1 else 0
    x, xerr = dist.mean(0), dist.std(0, ddof=ddof)
    span = max(float(np.ptp(x)), 0.1) if x.size else 1.0
    markers = "osD^vP*Xhp"
    colours = [f"C{j}" for j in range(len(layers))]
    for j, layer in enumerate(layers):
        y, yerr = c[:, :, j].mean(0), c[:, :, j].std(0, ddof=ddof)
        dodge = (j - (len(layers) - 1) / 2) * 0.012 * span
        for h in range(len(x)):
            ax.errorbar(x[h] + dodge, y[h], xerr=xerr[h], yerr=yerr[h], marker=markers[h % len(markers)], ms=6,
                        capsize=2.5, elinewidth=1, ls="none", alpha=0.9, color=colours[j])
    handles = [Line2D([], [], color=colours[j], marker="s", ls="none", label=layer) for j, layer in enumerate(layers)]
    handles += [Line2D([], [], color="0.25", marker=markers[h % len(markers)], ls="none", label=f"head {h}")
                for h in range(len(x))]
    if uniform is not None:
        ax.axvline(uniform, color="0.3", ls="--", lw=1.1)
        handles.append(Line2D([], [], color="0.3", ls="--", label=f"uniform attention ({uniform:.1f} px)"))
    ax.set_xlabel("mean attention distance of the head (px)")
    ax.set_ylabel("CKA with ResNet layer")
    ax.set_title(title)
    ax.legend(handles=handles, fontsize=8, title="colour: ResNet layer; shape: head", title_fontsize=8,
              ncols=2, loc="best")
    return ax


def receptive_fields_with_radii(erfs: dict, radii: dict, uniform_radius: float, ncols: int = 3,
                                gamma: float = 0.3):
    """:func:`receptive_fields` with two circles on every panel: the field's half-mass radius (solid, mean of
    ``radii[name]`` over draws) and the half-mass radius of a uniform field over the image (dashed,
    ``uniform_radius``), for reference."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle
    fig = receptive_fields(erfs, ncols=ncols, gamma=gamma)
    measured, reference = "#5fd3f3", "#b8f26b"
    for ax, (name, erf) in zip(fig.axes, erfs.items()):
        h, w = np.asarray(erf).shape
        centre = ((w - 1) / 2, (h - 1) / 2)
        r = float(np.mean(radii[name]))
        ax.add_patch(Circle(centre, r, fill=False, edgecolor=measured, lw=1.6))
        ax.add_patch(Circle(centre, uniform_radius, fill=False, edgecolor=reference, lw=1.2, ls="--"))
        ax.set_title(f"{name}\nhalf-mass radius {r:.1f} px", fontsize=9)
    fig.legend(handles=[Line2D([], [], color=measured, lw=1.6, label="half-mass radius of the field"),
                        Line2D([], [], color=reference, lw=1.2, ls="--",
                               label=f"half-mass radius of a uniform field ({uniform_radius:.1f} px)")],
               loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def recipe_ablation_distances(ax, columns: list, local_fraction: float, title: str, horizontal: bool = False):
    """Block-0 head distances ÷ the uniform-attention distance, one column per recipe: ``columns`` is a list
    of ``(label, [draw][head] or None)``; each head a dot at its mean over draws with a min–max bar over
    draws; a column without values (not measured yet) is labelled so, never filled. Reference lines at 1
    (uniform attention) and at the local threshold ``local_fraction``. ``horizontal=True``: one row per recipe
    (top to bottom, distance on the x axis), the phone layout."""
    top = 1.25
    along, across = (ax.set_ylim, ax.set_xlim) if horizontal else (ax.set_xlim, ax.set_ylim)
    line = ax.axvline if horizontal else ax.axhline
    for i, (label, values) in enumerate(columns):
        if values is None:
            ax.text(*((0.5, i) if horizontal else (i, 0.5)), "not yet measured", ha="center", va="center",
                    rotation=0 if horizontal else 90, fontsize=8, color="0.4",
                    bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "round,pad=0.3"})
            continue
        v = np.asarray(values, dtype=float)
        mean = v.mean(0)
        heads = len(mean)
        offsets = np.linspace(-0.22, 0.22, heads) if heads > 1 else np.zeros(1)
        colour = "0.25" if label.startswith("zoo") else MODEL_COLOURS["vit"]
        spread = [mean - v.min(0), v.max(0) - mean]
        if horizontal:
            ax.errorbar(mean, i + offsets, xerr=spread, fmt="o", ms=3.5, capsize=2, elinewidth=1, color=colour)
        else:
            ax.errorbar(i + offsets, mean, yerr=spread, fmt="o", ms=4, capsize=2, elinewidth=1, color=colour)
        top = max(top, float(v.max()) + 0.08)
    if columns and columns[-1][0].startswith("zoo"):
        (ax.axhline if horizontal else ax.axvline)(len(columns) - 1.5, color="0.6", lw=0.8)  # the shipped reference
    line(1.0, color="0.3", ls="--", lw=1.1, label="uniform attention (1×)")
    line(local_fraction, color=MODEL_COLOURS["resnet"], ls=":", lw=1.5, label=f"local threshold ({local_fraction:g}×)")
    labels = [label for label, _ in columns]
    if horizontal:
        ax.set_yticks(range(len(columns)), labels, fontsize=8)
        along(len(columns) - 0.4, -0.6)                                   # the first recipe at the top
        across(0, top)
        ax.set_xlabel("block-0 head distance ÷ uniform distance", fontsize=9)
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, framealpha=0.9)
    else:
        ax.set_xticks(range(len(columns)), labels, fontsize=8)
        along(-0.6, len(columns) - 0.4)
        across(0, top)
        ax.set_ylabel("block-0 head distance ÷ uniform distance")
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.set_title(title, fontsize=9 if horizontal else None)
    return ax


# -- representation structure and skip connections over draws (issue 15) ------------------------------------
def outline_layers(ax, rows: slice, cols: slice, colour: str = "#5fd3f3", label: str | None = None, ls: str = "--"):
    """Frame the heatmap cells ``rows × cols`` (index ranges of a :func:`cka_heatmap`) with a rectangle, e.g.
    the lowest-by-highest-quarter block whose mean CKA a criterion uses; ``label`` names it in the legend."""
    from matplotlib.patches import Rectangle
    ax.add_patch(Rectangle((cols.start, rows.start), cols.stop - cols.start, rows.stop - rows.start, fill=False,
                           edgecolor=colour, lw=1.6, ls=ls, label=label))
    return ax


def mean_sd_bars(ax, groups: dict, title: str, ylabel: str, colours: dict | None = None,
                 references: list[tuple[float, str]] = ()):
    """Grouped bars of the mean over draws with ± SD error bars and each draw as a dot. ``groups`` maps a group
    (x position) to ``{label: [per draw]}``; each ``(y, text)`` of ``references`` adds a horizontal line (e.g. a
    criterion's threshold)."""
    labels = list(dict.fromkeys(lb for g in groups.values() for lb in g))
    colours = colours or {lb: MODEL_COLOURS.get(lb.lower(), f"C{i}") for i, lb in enumerate(labels)}
    width = 0.8 / max(len(labels), 1)
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        for x, (group, values) in enumerate(groups.items()):
            if label not in values:
                continue
            v = np.asarray(values[label], dtype=float)
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, np.nanmean(v), width * 0.9, yerr=np.nanstd(v, ddof=1) if len(v) > 1 else None,
                   color=colours[label], alpha=0.75, capsize=4, label=label if x == 0 else None)
            ax.scatter(pos + rng.uniform(-0.12, 0.12, len(v)) * width, v, s=12, color="k", zorder=3, lw=0)
    for k, (y, text) in enumerate(references):
        ax.axhline(y, color=("#d1495b", "0.3", "0.5")[k % 3], lw=1.2, ls=("--", ":", "-.")[k % 3], label=text)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def best_match_over_draws(ax, matches, mean_match=None, colour: str = "#5fd3f3"):
    """On a ResNet-rows × ViT-columns :func:`cka_heatmap`: each draw's most similar ResNet layer for every ViT
    layer (``matches (draws, ViT layers)``, small dots) and, optionally, that of the mean heatmap (a line)."""
    matches = np.asarray(matches, dtype=float)
    cols = np.arange(matches.shape[1]) + 0.5
    for d, row in enumerate(matches):
        ax.scatter(cols, row + 0.5, s=16, color=colour, alpha=0.8, edgecolors="k", linewidths=0.4,
                   label=f"most similar ResNet layer, each of {len(matches)} draws" if d == 0 else None)
    if mean_match is not None:
        ax.plot(cols, np.asarray(mean_match, dtype=float) + 0.5, lw=1.2, color=colour,
                label="most similar ResNet layer, mean heatmap")
    return ax


def max_cka_by_layer(ax, maxima, names, last_third_start: int, threshold: float | None, title: str):
    """For each ViT layer, its highest CKA with any ResNet layer: the mean over draws (line) with a ± SD band and
    the draws' range (light band); the ViT's last third shaded, and ``threshold`` drawn over it."""
    maxima = np.asarray(maxima, dtype=float)
    x = np.arange(maxima.shape[1])
    mean, sd = maxima.mean(0), maxima.std(0, ddof=1) if len(maxima) > 1 else np.zeros(maxima.shape[1])
    ax.fill_between(x, maxima.min(0), maxima.max(0), color=MODEL_COLOURS["vit"], alpha=0.12, lw=0,
                    label="range over draws")
    ax.fill_between(x, mean - sd, mean + sd, color=MODEL_COLOURS["vit"], alpha=0.3, lw=0, label="mean ± SD")
    ax.plot(x, mean, color=MODEL_COLOURS["vit"], marker="o", ms=3, lw=1.5, label="mean over draws")
    ax.axvspan(last_third_start - 0.5, len(x) - 0.5, color="0.85", zorder=0, label="ViT's last third")
    if threshold is not None:
        ax.hlines(threshold, last_third_start - 0.5, len(x) - 0.5, colors="#d1495b", lw=1.5, ls="--",
                  label=f"criterion: stays below {threshold:g}")
    ticks = [i for i, n in enumerate(names) if n.count(".") <= 1]       # embedding and block outputs
    ticks = ticks if 3 <= len(ticks) <= 20 else list(x[::max(1, len(names) // 12)])
    ax.set_xticks(ticks)
    ax.set_xticklabels([names[i] for i in ticks], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(x) - 0.5)
    ax.set_ylim(min(0.0, np.nanmin(maxima) - 0.05), 1.02)
    ax.set_xlabel("ViT layer")
    ax.set_ylabel("highest CKA with any ResNet layer")
    ax.set_title(title)
    ax.legend(fontsize=7.5, loc="lower left")
    return ax


def _mean_band(ax, x, draws, colour, label, marker, ls="-"):
    draws = np.asarray(draws, dtype=float)
    mean = draws.mean(0)
    sd = draws.std(0, ddof=1) if len(draws) > 1 else np.zeros_like(mean)
    ax.fill_between(x, np.maximum(mean - sd, draws.min(0)), mean + sd, color=colour, alpha=0.22, lw=0)
    ax.plot(x, mean, marker=marker, ms=4, ls=ls, color=colour, label=label)


def skip_ratio_profile_over_draws(ax, profile: dict, title: str, half: int | None = None,
                                  medians: dict | None = None):
    """Skip ratio against normalised depth on a log y axis, mean over draws with a ± SD band: the ViT's CLS token
    and mean of patch tokens, the ResNet per unit (``profile`` from
    :meth:`vitcnn_utils.chapters.skip_connections.SkipConnectionsResult.profile`). ``half`` (sublayers in the first
    half) draws the boundary between the halves F7 compares; ``medians={"vit": [d], "resnet": [d]}`` draws the
    ViT's median ratio and twice the ResNet's (F7's third criterion), as means over draws."""
    depth = np.asarray(profile["depth"], dtype=float)
    if profile.get("cls") is not None:
        _mean_band(ax, depth, profile["cls"], MODEL_COLOURS["vit"], "ViT, CLS token", "o")
    _mean_band(ax, depth, profile["spatial"], "#7fa6dc", "ViT, mean of patch tokens", "s", "--")
    _mean_band(ax, np.asarray(profile["resnet_depth"], dtype=float), profile["resnet"], MODEL_COLOURS["resnet"],
               "ResNet, per unit", "^")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    if half is not None and 0 < half < len(depth):
        ax.axvline((depth[half - 1] + depth[half]) / 2, color="0.35", lw=1, ls="-.",
                   label="first half | second half (ViT)")
    if medians is not None:
        ax.axhline(float(np.mean(medians["vit"])), color=MODEL_COLOURS["vit"], lw=1, ls=(0, (1, 3)),
                   label="ViT median ratio")
        ax.axhline(2 * float(np.mean(medians["resnet"])), color=MODEL_COLOURS["resnet"], lw=1, ls=(0, (1, 3)),
                   label="2 × ResNet median (criterion)")
    ax.set_yscale("log")
    _plain_log_labels(ax.yaxis)
    ax.set_xlabel("normalised depth (0 = first sublayer / unit, 1 = last)")
    ax.set_ylabel("skip ratio ‖z‖ / ‖f(z)‖ (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=7.5)
    return ax


def no_skip_heatmap_grid(panels: list, suptitle: str, ncols: int = 2, panel_inches: float = 5.2,
                         narrow: bool = False):
    """Within-model CKA heatmaps in a grid of ``ncols`` columns, each panel ``panel_inches`` wide so that the
    layer ticks (every block output) stay readable, one shared colour bar. Panels are
    dicts with ``matrix``, ``names``, ``title`` and optionally ``block``: the layers of that ViT block are framed
    by dashed lines (where a heatmap of a ViT without that block's skips should split). ``narrow=True``: the
    phone layout, one column of 3.3-inch panels with wrapped titles."""
    if narrow:
        ncols, panel_inches = 1, 3.3
        suptitle = textwrap.fill(suptitle, 52)
        panels = [{**p, "title": "\n".join(textwrap.fill(line, 50) for line in p["title"].split("\n"))}
                  for p in panels]
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_inches * ncols + 1.2, (panel_inches + 0.9) * nrows),
                             layout="constrained", squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        names = panel["names"]
        every = next((k for k, n in enumerate(names) if n == "blocks.0"), max(1, len(names) // 6)) or 1
        cka_heatmap(ax, panel["matrix"], names, names, panel["title"], "layer", "layer", tick_every=every,
                    colorbar=False)
        ax.tick_params(labelsize=8.5)
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            label.set_fontsize(8.5)
        ax.title.set_fontsize(9 if narrow else 10)
        block = panel.get("block")
        if block is not None:
            inside = [k for k, n in enumerate(names) if n == f"blocks.{block}" or n.startswith(f"blocks.{block}.")]
            for edge in (inside[0], inside[-1] + 1):
                ax.axvline(edge, color="#5fd3f3", lw=1.2, ls="--")
                ax.axhline(edge, color="#5fd3f3", lw=1.2, ls="--")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.colorbar(axes.flat[0].collections[0], ax=axes.ravel().tolist(), label="CKA",
                 **({"location": "bottom", "shrink": 0.8, "aspect": 30} if narrow else {"shrink": 0.6}))
    fig.suptitle(suptitle, fontsize=10 if narrow else None)
    return fig


def no_skip_summary(blocks, split: dict, drops: dict, threshold_points: float | None, middle_block: int | None,
                    title: str, paper_points: float | None = 4.0):
    """Two panels over the blocks whose skips were removed (x): the mean CKA across the block (``split``:
    ``{label: [per block: [per draw]]}``) and the accuracy drop in points (``drops``, same shape), mean ± SD error
    bars over draws with each draw as a dot. ``threshold_points`` is drawn at ``middle_block`` (the criterion),
    ``paper_points`` as a dotted line across."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 7.6), layout="constrained")
    blocks = list(blocks)
    x = np.arange(len(blocks))
    styles = ["o", "s", "D", "^", "v"]
    for ax, data, ylabel in ((axes[0], split, "mean CKA across the block"),
                             (axes[1], drops, "accuracy drop (points)")):
        n = len(data)
        for i, (label, per_block) in enumerate(data.items()):
            off = (i - (n - 1) / 2) * 0.16
            for k, values in enumerate(per_block):
                v = np.asarray(values, dtype=float)
                ax.scatter(np.full(len(v), x[k] + off), v, s=10, color=f"C{i}", alpha=0.55, lw=0)
            means = [np.nanmean(np.asarray(v, dtype=float)) for v in per_block]
            sds = [np.nanstd(np.asarray(v, dtype=float), ddof=1) if len(v) > 1 else 0.0 for v in per_block]
            ax.errorbar(x + off, means, yerr=sds, fmt=styles[i % len(styles)], color=f"C{i}", capsize=4, ms=6,
                        label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([f"block {b}" for b in blocks])
        ax.set_xlabel("block whose two skips were removed")
        ax.set_ylabel(ylabel)
    axes[0].set_title("CKA between the layers before and after the block")
    axes[1].axhline(0, color="0.5", lw=0.8)
    if paper_points is not None:
        axes[1].axhline(paper_points, color="0.4", lw=1, ls=":", label=f"paper, middle block: ≈{paper_points:g}")
    if threshold_points is not None and middle_block in blocks:
        k = blocks.index(middle_block)
        axes[1].hlines(threshold_points, k - 0.4, k + 0.4, colors="#d1495b", lw=1.8, ls="--",
                       label=f"criterion at the middle block: ≥ {threshold_points:g}")
    axes[1].set_title("Accuracy lost without the skips")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# -- spatial information and scale of data over draws (paper Figs 9-13) -------------------------------------------
def _range_band(ax, x, draws, colour, label, marker="o", ls="-", lw=1.8):
    """The mean over draws (line) and the draws' range (band) of ``draws`` ``(draws, points)``."""
    draws = np.atleast_2d(np.asarray(draws, dtype=float))
    ax.plot(x, np.nanmean(draws, 0), marker=marker, ms=4.5, ls=ls, lw=lw, color=colour, label=label)
    if len(draws) > 1:
        ax.fill_between(x, np.nanmin(draws, 0), np.nanmax(draws, 0), color=colour, alpha=0.18, lw=0)


def own_patch_count_bars(ax, counts: dict, totals: dict, title: str, colours: dict | None = None,
                         needed: tuple[float, str] | None = None, second_seed: dict | None = None):
    """F9: per model, how many interior tokens are most similar to their own input patch: a bar at the mean over
    draws, an error bar over the draws' range and each draw as a dot. ``counts`` maps a model to ``[per draw]``
    (ints), ``totals`` a model to its number of interior tokens (the y axis ends there); ``needed=(y, text)``
    draws the level a criterion asks for as a dashed line; ``second_seed`` maps a model to its second training
    seed's ``[per draw]`` counts, drawn as open diamonds beside its dots."""
    labels = list(counts)
    colours = colours or {lb: f"C{i}" for i, lb in enumerate(labels)}
    rng = np.random.default_rng(0)
    for x, label in enumerate(labels):
        v = np.asarray(counts[label], dtype=float)
        mean = v.mean()
        ax.bar(x, mean, 0.6, color=colours[label], alpha=0.75,
               yerr=[[mean - v.min()], [v.max() - mean]] if len(v) > 1 else None, capsize=5)
        ax.scatter(x + rng.uniform(-0.12, 0.12, len(v)), v, s=16, color="k", zorder=3, lw=0,
                   label=f"one draw ({len(v)} draws)" if x == 0 else None)
        ax.text(x + 0.33, mean, f"mean {mean:.1f}\nof {totals[label]}", ha="left", va="center", fontsize=8.5)
        if second_seed and label in second_seed:
            ax.scatter(x + 0.2 + rng.uniform(-0.05, 0.05, len(second_seed[label])), second_seed[label], s=30,
                       marker="D", facecolor="white", edgecolor="k", lw=1, zorder=3,
                       label="second training seed, one draw" if label == next(iter(second_seed)) else None)
    if needed is not None:
        ax.axhline(needed[0], color="#d1495b", lw=1.4, ls="--", label=needed[1])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylim(0, max(totals.values()) + 1.5)
    ax.set_xlim(-0.5, len(labels) - 0.1)
    ax.set_ylabel("interior tokens whose most similar\ninput patch is their own")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    return ax


def spatial_probe_curves_over_draws(ax, depth: dict, curves: dict, title: str, colours: dict | None = None,
                                    chance: float | None = None):
    """:func:`spatial_probe_curves` over draws: ``curves`` maps a model label to ``{kind: (draws, layers)}``
    accuracies in [0, 1]; each curve is the mean over draws with the draws' range as a band."""
    colours = colours or dict(zip(curves, sns.color_palette("deep", len(curves))))
    for model, kinds in curves.items():
        x = np.asarray(depth[model], dtype=float)
        for kind, values in kinds.items():
            style, marker, text = _PROBE_KIND_STYLE.get(kind, ("-.", "x", kind))
            _range_band(ax, x, 100 * np.asarray(values, dtype=float), colours[model], f"{model}: {text}", marker, style)
    _probe_axes(ax, title, chance, "-.")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)   # below: the plot keeps the width
    return ax


def matched_layer_curves_over_draws(ax, layer_names, curves: dict, title: str, ylabel: str, colours: dict | None = None,
                                    legend: dict | None = None, threshold: tuple[float, str] | None = None,
                                    low: float | None = None):
    """Matched-layer CKA curves over draws: ``curves`` maps a label to ``(draws, layers)`` CKA with the reference
    model's same layer; mean over draws (line) and the draws' range (band). ``legend`` maps a label to its legend
    text; ``threshold=(y, text)`` draws a criterion's level over the first block (x = 1) as a dashed segment;
    ``low`` fixes the bottom of the y axis (so that panels share one; default: 0.03 below the lowest
    value). The legend goes below the axes."""
    colours = colours or data_fraction_colours(curves)
    x = np.arange(len(layer_names))
    bottom = np.inf
    for i, (label, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=float)
        _range_band(ax, x, values, colours[label], (legend or {}).get(label, label),
                    _FRACTION_MARKERS[i % len(_FRACTION_MARKERS)])
        bottom = min(bottom, np.nanmin(values))
    if threshold is not None:
        ax.hlines(threshold[0], 0.6, 1.4, colors="#d1495b", lw=2, ls="--", label=threshold[1])
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels(layer_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim((bottom - 0.03) if low is None else low, 1.03)
    ax.set_xlabel("layer (block outputs; leftmost = embedding / stem)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    # beside the axes: inside, the legend would cover the threshold segment over the first block, and below
    # them it would cover the axis label of a panel stacked underneath
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return ax


def probe_by_depth_over_draws(ax, curves: dict, title: str, chance: float | None = None, colours: dict | None = None,
                              legend: dict | None = None, mid_depth: float | None = None):
    """Probe accuracy against normalised depth over draws: ``curves`` maps a label to ``(draws, blocks)`` accuracies in [0, 1];
    mean over draws (line) and range (band); ``mid_depth`` marks the mid-network block the text compares."""
    colours = colours or data_fraction_colours(curves)
    for i, (label, values) in enumerate(curves.items()):
        values = 100 * np.atleast_2d(np.asarray(values, dtype=float))
        depth = np.arange(values.shape[1]) / max(values.shape[1] - 1, 1)
        _range_band(ax, depth, values, colours[label], (legend or {}).get(label, label),
                    _FRACTION_MARKERS[i % len(_FRACTION_MARKERS)])
    if mid_depth is not None:
        ax.axvline(mid_depth, color="0.45", lw=1, ls=":", label="mid-network block")
    _probe_axes(ax, title, chance, "--")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=7.5, loc="lower right")
    return ax


def cka_estimator_bias(ax, result):
    """Biased and unbiased linear CKA of independent random features against their width (background chapter):
    ``result`` is a :class:`vitcnn_utils.baselines.EstimatorBias`; each estimator's mean over the seeds (line)
    with ± 1 SD error bars, the true value 0, and the large-sample expectation of the biased estimator
    ``w / (w + n)`` (ratio of the expected HSIC terms of two independent Gaussian representations of width ``w``)."""
    widths = np.asarray(result.widths, dtype=float)
    styles = {"biased": ("#d1495b", "o", "biased CKA (Kornblith et al. 2019)"),
              "unbiased": ("#3b6fb6", "s", "unbiased CKA (this project, the paper)")}
    for estimator, (colour, marker, label) in styles.items():
        ax.errorbar(widths, result.mean(estimator).numpy(), yerr=result.sd(estimator).numpy(), color=colour,
                    marker=marker, ms=5, lw=1.8, capsize=3, label=label)
    grid = np.geomspace(widths.min(), widths.max(), 200)
    ax.plot(grid, grid / (grid + result.n), color="#d1495b", lw=1, ls=":", label=f"w / (w + n), n = {result.n}")
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.axvline(result.n, color="0.55", lw=0.8, ls="--")
    ax.text(result.n * 1.08, 0.8, "width = n", color="0.4", fontsize=8, rotation=90, va="center")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths)
    ax.set_xticklabels([str(int(w)) for w in widths])
    ax.set_ylim(-0.08, 1.05)
    ax.set_xlabel("width of each representation (features)")
    ax.set_ylabel("linear CKA")
    ax.set_title(f"CKA of two independent random representations\n(n = {result.n} examples, mean ± SD of "
                 f"{len(result.seeds)} seeds; the true value is 0)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def twin_cka_by_block(ax, curves: dict, title: str, colours: dict | None = None):
    """CKA of each block output of a trained model with the same block of its seed twin (same architecture and
    recipe, another training seed): ``curves`` maps a label to ``(block names, CKA per block)``; x is the block
    number (1 = first block), one line per model."""
    colours = colours or {}
    default = iter(sns.color_palette("deep"))
    for i, (label, (names, values)) in enumerate(curves.items()):
        values = np.asarray(values, dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, marker=_FRACTION_MARKERS[i % len(_FRACTION_MARKERS)],
                lw=1.8, color=colours.get(label) or next(default), label=label)
    longest = max((len(v[1]) for v in curves.values()), default=0)
    ax.set_xticks(np.arange(1, longest + 1))
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(min([0.0] + [np.nanmin(np.asarray(v[1], dtype=float)) - 0.05 for v in curves.values()]), 1.03)
    ax.set_xlabel("block (residual stream: block / residual-unit output)")
    ax.set_ylabel("CKA with the seed twin")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return ax


VERDICT_COLOURS = {"reproduced": "#2e9e6e", "direction only": "#7fb7e3", "partly": "#7fb7e3",
                   "not distinguishable from noise": "#a0a0a0", "opposite": "#d1495b", "not reproduced": "#d1495b",
                   "untestable at this scale": "#c9c9c9", "confounded": "#e0a458", "not measured": "#e6e6e6"}


def findings_forest(rows: list[dict], width: float = 10.0, row_inches: float = 0.95, narrow: bool = False):
    """The summary figure: one small panel per finding (rows of :func:`vitcnn_utils.findings.table`), each on its
    own axis in its own unit. Dots with thin bars: each training seed's mean and 95% draw interval; the wide band:
    the interval the verdict reads (their union), coloured by the verdict; solid line: the central criterion's
    threshold (0 = no effect, or the level the claim needs); dashed line: the paper's size. Returns the figure.

    ``narrow=True``: the phone layout (4 in wide, for a screen of ~360 px): each panel titled by its finding and
    verdict only (the paper's claim is in the table beside it), axis labels wrapped."""
    if narrow:
        width, row_inches = 4.0, 1.05
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, row_inches * len(rows) + (1.0 if narrow else 0.6)),
                             layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, row in zip(axes, rows):
        central, size = row["judged"].get("central"), row["judged"].get("size")
        colour = VERDICT_COLOURS.get(row["verdict"], "#888888")
        ax.set_yticks([])
        ax.grid(axis="y", visible=False)
        verdict_colour = colour if colour not in ("#c9c9c9", "#e6e6e6", "#a0a0a0") else "#666666"
        if narrow:
            ax.set_title(f"F{row['finding']}", loc="left", fontsize=10, fontweight="bold")
        else:
            ax.set_ylabel(f"F{row['finding']}", rotation=0, ha="right", va="center", fontsize=11, fontweight="bold")
            ax.set_title(f"{row['paper']}", loc="left", fontsize=9.5, fontweight="normal", color="#333333")
        ax.set_title(row["verdict"], loc="right", fontsize=9.5, fontweight="bold", color=verdict_colour)
        if central is None or central.interval is None:
            ax.set_xticks([])
            ax.text(0.5, 0.5, row["not_measured"] or "no measured effect", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="#555555")
            continue
        iv, k = central.interval, central.scale
        band = (k * iv.low, k * iv.high)
        for y, (m, lo, hi) in zip(np.linspace(0.35, 0.65, max(iv.n_seeds, 2))[:iv.n_seeds], iv.seeds):
            ax.plot([k * lo, k * hi], [y, y], color="#222222", lw=1.2)
            ax.plot([k * m], [y], "o", color="#222222", ms=4)
        marks = [k * iv.low, k * iv.high]
        for check, style, label in ((central, "-", "threshold"), (size, "--", "paper's size")):
            if check is None or check.threshold is None:
                continue
            for t in (check.threshold if isinstance(check.threshold, tuple) else (check.threshold,)):
                ax.axvline(check.scale * t, color="#444444", ls=style, lw=1.1)
                marks.append(check.scale * t)
        lo, hi = min(marks), max(marks)
        pad = 0.08 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        grow = max(0.0, 0.006 * (hi - lo + 2 * pad) - (band[1] - band[0])) / 2     # a zero-width band stays visible
        ax.axvspan(band[0] - grow, band[1] + grow, ymin=0.15, ymax=0.85, color=colour, alpha=0.6, lw=0, zorder=0)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelsize=8.5)
        if narrow:
            ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        label = central.rule + (f" ({central.unit.strip()})" if central.unit.strip() else "")
        ax.set_xlabel(textwrap.fill(label, 56) if narrow else label, fontsize=8.5, labelpad=1)
    if narrow:
        fig.suptitle("Each finding's effect against its noise\ndots: per-seed means, 95% draw intervals; band: over\n"
                     "seeds and draws; solid: threshold; dashed: paper", fontsize=9.5)
    else:
        fig.suptitle("Each finding's effect against its noise: per-seed means (dots) with 95% draw intervals; band = "
                     "interval over seeds and draws;\nsolid line = the criterion's threshold, dashed = the paper's size",
                     fontsize=10)
    return fig

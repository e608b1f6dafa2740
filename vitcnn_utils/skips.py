"""Skip connections (paper Figs 7 and 8): how much of a representation travels along the identity path.

For a residual sublayer ``z ↦ z + f(z)``, the ratio ``‖z‖ / ‖f(z)‖`` of the norms of the identity path and of
the residual branch. For a timm ViT, per block and sublayer (attention, MLP), per token (token 0 = CLS when
present), norms over channels, ratios averaged over images: ``(2·blocks, tokens)``. For a timm ResNet, per
bottleneck unit, norms over the whole unit tensor (the shortcut after any downsampling, and ``bn3``, the
branch before the addition), averaged over images: ``(units,)``. Under ``torch.distributed`` the sums
are all-reduced.

Fig 8 (ViTs retrained with both skips of one block removed): :func:`split_contrast` measures how far a
within-model CKA heatmap splits at that block (mean CKA between the layers before and after it), and
:func:`no_skip_comparison` sets each no-skip ViT against the intact one (split CKA, accuracy, training budget).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from .hooks import mean_over_images, normalised_depth
from .zoo import optimisation_steps


def vit_skip_ratios(model: VisionTransformer, batches: Iterable, device="cpu") -> tuple[torch.Tensor, list[str]]:
    """Ratios ``(2·blocks, tokens)`` float64 and their row names (``"blocks.i attn"``, ``"blocks.i mlp"``)."""
    taps, names = [], []
    for i in range(len(model.blocks)):
        taps += [(f"blocks.{i}:in", f"blocks.{i}.ls1"), (f"blocks.{i}.norm2:in", f"blocks.{i}.ls2")]
        names += [f"blocks.{i} attn", f"blocks.{i} mlp"]
    return _ratios(model, batches, taps, per_token=True, device=device), names


def resnet_skip_ratios(model: ResNet, batches: Iterable, device="cpu") -> tuple[torch.Tensor, list[str]]:
    """Ratios ``(units,)`` float64 for the bottleneck units of a timm ResNet, and the unit names."""
    units = [name for name, m in model.named_modules() if isinstance(m, Bottleneck)]
    if not units:
        raise ValueError("no bottleneck units found: skip ratios are defined for timm bottleneck ResNets")
    taps = []
    for name in units:
        unit = dict(model.named_modules())[name]
        identity = f"{name}.downsample" if unit.downsample is not None else f"{name}:in"
        taps.append((identity, f"{name}.bn3"))
    return _ratios(model, batches, taps, per_token=False, device=device), units


def _ratios(model, batches, taps, per_token: bool, device) -> torch.Tensor:
    layers = list(dict.fromkeys(name for pair in taps for name in pair))

    def per_image(feats):                                         # (B, sublayers[, tokens])
        rows = []
        for identity, branch in taps:
            z, f = feats[identity].double(), feats[branch].double()
            if per_token:                                         # (B, N, D): norms over channels
                rows.append(z.norm(dim=-1) / f.norm(dim=-1))
            else:                                                 # (B, C, H, W): norms over the tensor
                rows.append(z.flatten(1).norm(dim=1) / f.flatten(1).norm(dim=1))
        return torch.stack(rows, dim=1)
    return mean_over_images(model, batches, layers, per_image, device=device)[0]


# ---------------------------------------------------------------------------------------------------------------
# Summaries of the skip ratios (Fig 7) and of the heatmap split of ViTs without skips (Fig 8)
# ---------------------------------------------------------------------------------------------------------------

def ratio_profile(ratios: torch.Tensor, num_prefix_tokens: int = 1) -> dict:
    """Per-sublayer ratio curves of :func:`vit_skip_ratios` output ``ratios`` ``(sublayers, tokens)``.

    Args:
        num_prefix_tokens: how many leading tokens are not image patches (timm's
            ``model.num_prefix_tokens``: 1 with a CLS token, 0 for a GAP-pooled ViT).

    Returns:
        ``{"depth": (sublayers,) normalised depth (see :func:`~vitcnn_utils.hooks.normalised_depth`), "cls":
        (sublayers,) the ratio of token 0 (``None`` when ``num_prefix_tokens == 0``), "spatial": (sublayers,) the arithmetic
        mean of the ratio over the patch tokens (tokens ``num_prefix_tokens`` …)}``, all float64.
    """
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    if ratios.ndim != 2 or ratios.shape[1] <= num_prefix_tokens:
        raise ValueError(f"ratios must be (sublayers, tokens) with patch tokens after {num_prefix_tokens} "
                         f"prefix token(s), got shape {tuple(ratios.shape)}")
    return {"depth": normalised_depth(ratios.shape[0]),
            "cls": ratios[:, 0].clone() if num_prefix_tokens > 0 else None,
            "spatial": ratios[:, num_prefix_tokens:].mean(1)}


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


def removed_blocks(model: torch.nn.Module) -> list[int]:
    """Indices of the ViT blocks whose two skip connections were removed (instances of
    :class:`vitcnn_utils.models.NoSkipBlock`); ``[]`` for an intact ViT."""
    from .models import NoSkipBlock
    return [i for i, block in enumerate(getattr(model, "blocks", [])) if isinstance(block, NoSkipBlock)]


def _block_index(name: str) -> int | None:
    """``j`` for a layer named ``blocks.j`` or ``blocks.j.<sublayer>``, else ``None``."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def split_layers(names: list[str], block: int) -> tuple[list[int], list[int]]:
    """Which heatmap layers lie before and after ViT block ``block``.

    Layer names follow :func:`vitcnn_utils.hooks.default_layers`: ``blocks.j`` is the output of block ``j``,
    ``blocks.j.<sublayer>`` (``norm1``, ``attn``, ``norm2``, ``mlp.act``, ``mlp``) its internal sublayers.

    * **before**: every layer of blocks ``j < block`` (sublayers and outputs), and the layers that belong to
      no block and are listed before the first layer of block ``block`` (the token embedding ``norm_pre``):
      the representations up to the input of ``block``.
    * **after**: the output ``blocks.<block>`` of the block itself, every layer of blocks ``j > block``, and
      the non-block layers listed after the last layer of ``block`` (e.g. a final ``norm``): the
      representations from the output of ``block`` on.
    * in neither part: the internal sublayers ``blocks.<block>.*``, where the representation crosses the block.

    So for the last block the after part is its output alone (plus any final non-block layers).

    Returns:
        ``(before, after)``: lists of indices into ``names``, in the order of ``names``.
    """
    own = [k for k, name in enumerate(names) if _block_index(name) == block]
    if not own:
        raise ValueError(f"no layer of block {block} among the names ({', '.join(names[:4])}, ...)")
    before, after = [], []
    for k, name in enumerate(names):
        j = _block_index(name)
        if (j is not None and j < block) or (j is None and k < own[0]):
            before.append(k)
        elif (j is not None and j > block) or (j is None and k > own[-1]) or name == f"blocks.{block}":
            after.append(k)
    return before, after


def split_summary(matrix: torch.Tensor, names: list[str], block: int) -> dict[str, float]:
    """How strongly a within-model CKA heatmap splits at block ``block`` (see :func:`split_layers`).

    Args:
        matrix: ``(layers, layers)`` within-model CKA heatmap whose rows and columns are ``names``.

    Returns:
        ``{"across": mean CKA over the rectangle rows = layers before, columns = layers after (every
        before/after pair once), "before": mean CKA over distinct pairs of layers both before,
        "after": the same for the layers after}``; NaN entries (undefined CKA) are ignored, and a within
        part with a single layer gives NaN.
    """
    matrix = torch.as_tensor(matrix, dtype=torch.float64)
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"matrix of shape {tuple(matrix.shape)} does not match {len(names)} layer names")
    before, after = split_layers(names, block)
    if not before or not after:
        raise ValueError(f"block {block} has no layers on {'both sides' if not (before or after) else 'one side'}: "
                         f"{len(before)} before, {len(after)} after")

    def within(idx):
        sub = matrix[idx][:, idx]
        off = ~torch.eye(len(idx), dtype=torch.bool)
        return torch.nanmean(sub[off]).item() if len(idx) > 1 else float("nan")
    return {"across": torch.nanmean(matrix[before][:, after]).item(), "before": within(before),
            "after": within(after)}


def split_contrast(matrix: torch.Tensor, names: list[str], block: int) -> float:
    """Mean CKA between the layers before and the layers after block ``block`` (the off-diagonal rectangle
    across that block; layer sets defined in :func:`split_layers`, NaNs ignored). A heatmap that splits at
    ``block`` has a low value; compare it with the same layers of a model whose block is intact."""
    return split_summary(matrix, names, block)["across"]




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

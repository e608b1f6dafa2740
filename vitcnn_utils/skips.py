"""Skip connections (paper Figs 7 and 8): how much of a representation travels along the identity path.

For a residual sublayer ``z ↦ z + f(z)``, the ratio ``‖z‖ / ‖f(z)‖`` of the norms of the identity path and of
the residual branch. For a timm ViT, per block and sublayer (attention, MLP), per token (token 0 = CLS when
present), norms over channels, ratios averaged over images: ``(2·blocks, tokens)``. For a timm ResNet, per
bottleneck unit, norms over the whole unit tensor (the shortcut after any downsampling, and ``bn3``, the
branch before the addition), averaged over images: ``(units,)``. Under ``torch.distributed`` the sums
are all-reduced.

Fig 8 (ViTs retrained with both skips of one block removed): :func:`split_contrast` measures how far a
within-model CKA heatmap splits at that block (mean CKA between the layers before and after it), and
the skip-connections chapter (:mod:`vitcnn_utils.chapters.skip_connections`) sets each no-skip ViT against the
intact one. The model runs are in :mod:`vitcnn_utils.measure` (:func:`~vitcnn_utils.measure.vit_skip_ratios`).
"""
from __future__ import annotations

import torch

from .hooks import normalised_depth


def norm_ratio(identity: torch.Tensor, branch: torch.Tensor, per_token: bool) -> torch.Tensor:
    """``‖z‖ / ‖f(z)‖`` per image, float64: ``per_token`` for ViT tokens ``(B, N, D)`` (norms over channels,
    result ``(B, N)``), else over the whole unit tensor ``(B, C, H, W)`` of a CNN (result ``(B,)``)."""
    z, f = identity.double(), branch.double()
    if per_token:
        return z.norm(dim=-1) / f.norm(dim=-1)
    return z.flatten(1).norm(dim=1) / f.flatten(1).norm(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Summaries of the skip ratios (Fig 7) and of the heatmap split of ViTs without skips (Fig 8)
# ---------------------------------------------------------------------------------------------------------------

def ratio_profile(ratios: torch.Tensor, num_prefix_tokens: int = 1) -> dict:
    """Per-sublayer ratio curves of :func:`vitcnn_utils.measure.vit_skip_ratios` output ``ratios`` ``(sublayers, tokens)``.

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

"""Spatial information: token ↔ input-patch CKA (paper Figs 9–10) and effective receptive fields (Fig 6).

Token–patch CKA: for a representation laid out on the patch grid (a ViT layer's patch tokens
``(B, prefix + gh·gw, D)``, or a CNN feature map ``(B, C, gh, gw)`` whose "tokens" are the channel vectors at
each position), the CKA between token ``t`` (``m × D`` over ``m`` images) and the input pixels of patch ``p``
(``m × P·P·C``), for every ``t`` and ``p``: one :class:`~vitcnn_utils.cka.MinibatchCKA` accumulation gives
the whole ``(tokens, positions)`` matrix. A token that *localises* is most similar to its own patch.

This module is the maths on tensors (patches, grid tokens, position maps, own-patch counts, receptive-field
radii); the model runs are :func:`vitcnn_utils.measure.token_patch_cka` and
:func:`vitcnn_utils.measure.effective_receptive_field`.
"""
from __future__ import annotations

import numbers

import torch

from .attention import _grid


def grid_tokens(features: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """Per-position token vectors ``(B, gh·gw, D)`` of a ViT token tensor ``(B, prefix + gh·gw, D)`` or a
    feature map ``(B, C, gh, gw)`` (positions in row-major order)."""
    gh, gw = _grid(grid)
    if features.ndim == 4:
        if tuple(features.shape[-2:]) != (gh, gw):
            raise ValueError(f"feature map is {tuple(features.shape[-2:])}, expected the {gh}×{gw} patch grid")
        return features.flatten(2).transpose(1, 2)
    if features.ndim != 3 or features.shape[1] != num_prefix_tokens + gh * gw:
        raise ValueError(f"tokens {tuple(features.shape)} do not match {num_prefix_tokens} prefix + {gh}×{gw} grid")
    return features[:, num_prefix_tokens:]


def image_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Non-overlapping patches ``(B, gh·gw, C·P·P)`` of images ``(B, C, H, W)``, row-major."""
    patch_size = _patch_side(patch_size)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape} (one image: images[None])")
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}×{w} is not divisible into {patch_size}×{patch_size} patches")
    patches = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # B C gh gw P P
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(b, (h // patch_size) * (w // patch_size), -1)


def _patch_side(patch_size) -> int:
    """The side of square input patches in pixels, checked: a positive integer."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Integral) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer (the side of square input patches in pixels), "
                         f"got {patch_size!r}")
    return int(patch_size)


def infer_grid(features: torch.Tensor, num_prefix_tokens: int) -> tuple[int, int]:
    if features.ndim == 4:
        return tuple(features.shape[-2:])
    side = round((features.shape[1] - num_prefix_tokens) ** 0.5)
    if side * side != features.shape[1] - num_prefix_tokens:
        raise ValueError(f"cannot infer a square grid from {features.shape[1]} tokens: pass grid=(gh, gw)")
    return side, side


def erf_radius(erf: torch.Tensor, fraction: float = 0.5) -> float:
    """Radius (pixels) around the image centre that holds ``fraction`` (in (0, 1]) of the receptive field's mass.
    ``erf`` is an ``(H, W)`` map of finite, non-negative values with some mass (e.g. from
    :func:`vitcnn_utils.measure.effective_receptive_field`)."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] (the share of the receptive field's mass), got {fraction!r}")
    if not isinstance(erf, torch.Tensor) or erf.ndim != 2 or erf.numel() == 0:
        shape = tuple(erf.shape) if isinstance(erf, torch.Tensor) else type(erf).__name__
        raise ValueError(f"erf must be a non-empty (H, W) map, got {shape}")
    erf = erf.detach() if erf.is_floating_point() else erf.detach().double()
    if not torch.isfinite(erf).all() or (erf < 0).any():
        raise ValueError("erf must hold finite, non-negative values (a receptive field's magnitudes), got NaN, "
                         "inf or negative entries")
    if erf.sum() == 0:
        raise ValueError("erf has no mass (all zero): no radius holds a fraction of it")
    h, w = erf.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    radius = torch.sqrt((rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2).flatten()
    order = torch.argsort(radius)
    mass = torch.cumsum(erf.flatten()[order], 0)
    index = torch.searchsorted(mass, fraction * mass[-1]).clamp(max=len(mass) - 1)   # rounding of fraction · total
    return radius[order][index].item()


# ---------------------------------------------------------------------------------------------------------
# Chapter "spatial" (paper Figs 9–10): token grids of any model and token heatmaps (the Fig 11 token probes are
# in :mod:`vitcnn_utils.probes`).

def position_maps(matrix: torch.Tensor, grid: tuple[int, int], positions) -> torch.Tensor:
    """The rows of a token–patch matrix ``(gh·gw, gh·gw)`` (from :func:`vitcnn_utils.measure.token_patch_cka`) for the tokens at
    ``positions`` (``(row, col)`` pairs), each laid out on the grid: float64 ``(len(positions), gh, gw)``;
    entry ``[k, r, c]`` is the CKA of token ``positions[k]`` with the input patch at ``(r, c)``."""
    gh, gw = _grid(grid)
    if tuple(matrix.shape) != (gh * gw, gh * gw):
        raise ValueError(f"matrix {tuple(matrix.shape)} does not match the {gh}×{gw} grid")
    rows = []
    for position in positions:
        r, c = (int(v) for v in position)
        if not (0 <= r < gh and 0 <= c < gw):
            raise ValueError(f"token position {(r, c)} lies outside the {gh}×{gw} grid")
        rows.append(matrix[r * gw + c].reshape(gh, gw))
    return torch.stack(rows).double() if rows else matrix.new_zeros((0, gh, gw), dtype=torch.float64)



def own_patch_counts(matrix: torch.Tensor, grid: tuple[int, int]) -> dict[str, int]:
    """The counts behind :func:`vitcnn_utils.chapters.spatial.localisation_summary`'s fractions, as integers (so that a rule comparing
    them never turns on float rounding): ``own_patch_count`` / ``interior_own_patch_count``, the tokens
    (all / off the border of the grid) whose most similar input patch is their own; ``tokens`` /
    ``interior_tokens``, how many tokens there are; ``defined`` / ``interior_defined``, how many of them
    have a defined (non-NaN) own-patch CKA. A token with an undefined own-patch CKA is never a hit."""
    gh, gw = _grid(grid)
    matrix = matrix.double()
    n = len(matrix)
    if tuple(matrix.shape) != (gh * gw, gh * gw):
        raise ValueError(f"matrix {tuple(matrix.shape)} does not match the {gh}×{gw} grid")
    defined = ~torch.isnan(matrix.diagonal())
    hits = (torch.nan_to_num(matrix, nan=-torch.inf).argmax(1) == torch.arange(n)) & defined
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    interior = ((rows > 0) & (rows < gh - 1) & (cols > 0) & (cols < gw - 1)).flatten()
    return {"own_patch_count": int(hits.sum()), "tokens": n, "defined": int(defined.sum()),
            "interior_own_patch_count": int((hits & interior).sum()), "interior_tokens": int(interior.sum()),
            "interior_defined": int((defined & interior).sum())}

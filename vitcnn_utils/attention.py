"""Mean attention distance (paper Figs 3–4): how far, in pixels, each attention head looks.

For one head, query patch ``q`` and key patch ``k`` on the ``gh × gw`` patch grid, the distance is the
Euclidean distance between the patch centres in pixels, ``patch_size · ‖(r_q, c_q) − (r_k, c_k)‖``. A query's
attention distance is the attention-weighted mean of the distances to all keys; the head's *mean attention
distance* averages that over queries and images.

Prefix tokens (the CLS token) have no position. Their query rows are dropped, and their key columns are
dropped too. ``renormalize=True`` (default) then rescales each query's attention over the patch keys to sum
to 1: the distance is the mean distance *of the attention that goes to patches*. ``renormalize=False``
keeps the raw weights, which amounts to counting attention to CLS as distance 0; this is what the public
ViT code referred to in google-research/vision_transformer issue #162 does, and it gives smaller values for
heads that attend to CLS a lot.

The maths on attention tensors; the model run is :func:`vitcnn_utils.measure.attention_distances`.
"""
from __future__ import annotations

import math
import numbers
import torch



def _grid(grid) -> tuple[int, int]:
    """``(gh, gw)`` from ``g`` or ``(gh, gw)``: positive integers, checked."""
    sizes = tuple(grid) if isinstance(grid, (tuple, list, torch.Size)) else (grid, grid)
    if len(sizes) != 2 or any(isinstance(g, bool) or not isinstance(g, numbers.Integral) or g < 1 for g in sizes):
        raise ValueError(f"grid must be the patch grid, a positive integer g or a pair (gh, gw) of them, got {grid!r}")
    return int(sizes[0]), int(sizes[1])


def _patch_size(patch_size) -> tuple[float, float]:
    """The patch ``(height, width)`` in pixels, checked: a positive finite number (square patches) or a pair of
    them (``(ph, pw)``, e.g. timm's ``model.patch_embed.patch_size``); the unit of every distance."""
    sizes = tuple(patch_size) if isinstance(patch_size, (tuple, list, torch.Size)) else (patch_size, patch_size)
    if len(sizes) != 2 or any(isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p)
                              or p <= 0 for p in sizes):
        raise ValueError(f"patch_size must be the patch side in pixels (or a (height, width) pair), a positive "
                         f"number, got {patch_size!r} (for a timm ViT: model.patch_embed.patch_size)")
    return float(sizes[0]), float(sizes[1])


# rows of softmax outputs stored in a low-precision dtype sum to 1 only up to that dtype's rounding: each of
# the row's probabilities is rounded by at most half an ulp (eps / 2, relative), and a softmax computed in that
# dtype adds about as much through its normaliser; 2 eps bounds both with a margin
def _row_sum_tolerance(dtype: torch.dtype, atol: float) -> float:
    return max(atol, 2 * torch.finfo(dtype).eps) if dtype.is_floating_point else atol


def patch_distances(grid: int | tuple[int, int], patch_size: float | tuple[float, float], dtype=torch.float64,
                    device=None) -> torch.Tensor:
    """Pixel distances between patch centres, ``(gh·gw, gh·gw)``, patches in row-major order; ``patch_size``
    is the patch side in pixels (positive), or ``(height, width)`` for non-square patches (rows are ``height``
    pixels apart, columns ``width``)."""
    ph, pw = _patch_size(patch_size)
    gh, gw = _grid(grid)
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=dtype, device=device) * ph,
                                torch.arange(gw, dtype=dtype, device=device) * pw, indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    return torch.cdist(centres, centres)


def attention_distance_per_image(attn: torch.Tensor, patch_size: float, grid: int | tuple[int, int],
                                 num_prefix_tokens: int = 1, renormalize: bool = True,
                                 atol: float = 1e-3) -> torch.Tensor:
    """Per-image, per-head mean attention distance in pixels, ``(B, heads)`` float64 (averaged over the
    patch queries of each image). Arguments as in :func:`mean_attention_distance`; ``atol`` is the tolerance
    on each row's sum for float32/float64 probabilities, widened to ``2 eps`` of a lower-precision dtype
    (bfloat16: 0.0156, float16: 0.00195) since such rows sum to 1 only up to rounding."""
    if not isinstance(attn, torch.Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(f"attn must be a (B, heads, N, N) tensor of attention probabilities, got {shape}")
    if attn.shape[0] == 0 or attn.shape[1] == 0:
        missing = "images (B = 0)" if attn.shape[0] == 0 else "heads"
        raise ValueError(f"attn of shape {tuple(attn.shape)} has no {missing}: pass the (B, heads, N, N) attention "
                         "of at least one image")
    prefix = num_prefix_tokens
    if isinstance(prefix, bool) or not isinstance(prefix, numbers.Integral) or prefix < 0:
        raise ValueError(f"num_prefix_tokens must be the number (>= 0) of leading non-patch tokens, got "
                         f"{num_prefix_tokens!r} (1 for a CLS token, 0 for a GAP ViT; timm: model.num_prefix_tokens)")
    patch_size = _patch_size(patch_size)
    gh, gw = _grid(grid)
    n_tokens = attn.shape[-1]
    if n_tokens != num_prefix_tokens + gh * gw:
        raise ValueError(f"attn has {n_tokens} tokens but num_prefix_tokens + grid = {num_prefix_tokens} + "
                         f"{gh}×{gw} = {num_prefix_tokens + gh * gw}: check grid and num_prefix_tokens")
    dtype = attn.dtype
    attn = attn.detach().double()
    if not torch.isfinite(attn).all():
        raise ValueError("attn has non-finite values")
    deviation = (attn.sum(-1) - 1).abs().max().item()
    tolerance = _row_sum_tolerance(dtype, atol)
    minimum = attn.min().item()
    if deviation > tolerance or minimum < 0:
        raise ValueError(f"attn rows must be probabilities (>= 0) summing to 1, up to {tolerance:.2g} for {dtype} "
                         f"rows; these deviate by up to {deviation:.2e} and the smallest value is {minimum:.2e}: "
                         "pass the attention after the softmax (e.g. the 'blocks.*.attn.probs' taps), not "
                         "logits or scores")
    patches = attn[:, :, num_prefix_tokens:, num_prefix_tokens:]          # (B, H, P, P): queries × keys
    if renormalize:
        mass = patches.sum(-1, keepdim=True)
        if (mass == 0).any():
            raise ValueError("some queries put all their attention on prefix tokens: the distance over patches "
                             "is undefined with renormalize=True (use renormalize=False)")
        patches = patches / mass
    dist = patch_distances((gh, gw), patch_size, device=attn.device)
    per_query = (patches * dist).sum(-1)                                 # (B, H, P)
    return per_query.mean(-1)


def mean_attention_distance(attn: torch.Tensor, patch_size: float, grid: int | tuple[int, int],
                            num_prefix_tokens: int = 1, renormalize: bool = True) -> torch.Tensor:
    """Mean attention distance per head, in pixels.

    Args:
        attn: attention probabilities ``(B, heads, N, N)`` (rows sum to 1), ``N = num_prefix_tokens + gh·gw``,
            ``B >= 1``; any float dtype (bfloat16/float16 rows, e.g. captured under autocast, are accepted
            within their rounding and computed on in float64).
        patch_size: patch side in pixels (the unit of the result), > 0, or ``(height, width)`` of
            non-square patches (timm: ``model.patch_embed.patch_size``).
        grid: patch grid, ``g`` or ``(gh, gw)``.
        num_prefix_tokens: leading non-patch tokens, >= 0 (1 for a CLS token, 0 for a GAP ViT).
        renormalize: see the module docstring for the treatment of prefix tokens.

    Returns:
        float64 ``(heads,)``: averaged over queries and the ``B`` images.

    Raises:
        ValueError: for a shape that does not match ``grid`` and ``num_prefix_tokens``, no images, a negative
            ``num_prefix_tokens``, a non-positive ``patch_size``, or rows that are not probabilities.
    """
    return attention_distance_per_image(attn, patch_size, grid, num_prefix_tokens, renormalize).mean(0)


def distance_summary(distances: torch.Tensor) -> dict[str, float]:
    """Smallest and largest head distance in the first and the last block of ``(blocks, heads)``."""
    return {"first_min": distances[0].min().item(), "first_max": distances[0].max().item(),
            "last_min": distances[-1].min().item(), "last_max": distances[-1].max().item()}


def rank_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties get their order of appearance). Undefined, so NaN
    (as ``scipy.stats.spearmanr``), when either holds a NaN or is constant (no ranking)."""
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two 1-D tensors of the same length >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    if any(torch.isnan(v).any() or (v == v[0]).all() for v in (x, y)):
        return float("nan")
    rx, ry = (torch.argsort(torch.argsort(v)).double() for v in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return (rx @ ry / torch.sqrt((rx @ rx) * (ry @ ry))).item()

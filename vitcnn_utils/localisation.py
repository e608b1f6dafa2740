"""Spatial information: token ↔ input-patch CKA (paper Figs 9–10) and effective receptive fields (Fig 6).

Token–patch CKA: for a representation laid out on the patch grid (a ViT layer's patch tokens
``(B, prefix + gh·gw, D)``, or a CNN feature map ``(B, C, gh, gw)`` whose "tokens" are the channel vectors at
each position), the CKA between token ``t`` (``m × D`` over ``m`` images) and the input pixels of patch ``p``
(``m × P·P·C``), for every ``t`` and ``p``: one :class:`~vitcnn_utils.cka.MinibatchCKA` accumulation gives
the whole ``(tokens, positions)`` matrix. A token that *localises* is most similar to its own patch.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from .cka import MinibatchCKA
from .hooks import Capture
from .models import preprocessor


def grid_tokens(features: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """Per-position token vectors ``(B, gh·gw, D)`` of a ViT token tensor ``(B, prefix + gh·gw, D)`` or a
    feature map ``(B, C, gh, gw)`` (positions in row-major order)."""
    gh, gw = grid
    if features.ndim == 4:
        if tuple(features.shape[-2:]) != (gh, gw):
            raise ValueError(f"feature map is {tuple(features.shape[-2:])}, expected the {gh}×{gw} patch grid")
        return features.flatten(2).transpose(1, 2)
    if features.ndim != 3 or features.shape[1] != num_prefix_tokens + gh * gw:
        raise ValueError(f"tokens {tuple(features.shape)} do not match {num_prefix_tokens} prefix + {gh}×{gw} grid")
    return features[:, num_prefix_tokens:]


def image_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Non-overlapping patches ``(B, gh·gw, C·P·P)`` of images ``(B, C, H, W)``, row-major."""
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}×{w} is not divisible into {patch_size}×{patch_size} patches")
    patches = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # B C gh gw P P
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(b, (h // patch_size) * (w // patch_size), -1)


def token_patch_cka(model: torch.nn.Module, batches: Iterable, layer: str, patch_size: int,
                    grid: tuple[int, int], num_prefix_tokens: int = 0,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """CKA between every grid token of ``layer`` and every input patch.

    Args:
        model, layer: the network and the captured layer (e.g. ``"blocks.5"`` or ``"layer4.0"``).
        batches: raw ``(images, labels)`` minibatches; the model's preprocessing is applied, and the patches
            are taken from the preprocessed input the model sees.
        patch_size, grid: the input patch side (pixels) and the ``(gh, gw)`` grid of the layer.

    Returns:
        float64 ``(gh·gw tokens, gh·gw positions)``.
    """
    prep = preprocessor(model)
    cka = MinibatchCKA(device=device)
    model.eval().to(device)
    with Capture(model, layer) as cap, torch.inference_mode():
        for images, _ in batches:
            x = prep(images.to(device))
            tokens = grid_tokens(cap(x)[layer], grid, num_prefix_tokens)
            patches = image_patches(x, patch_size)
            cka.update(list(tokens.unbind(1)), list(patches.unbind(1)))
    return cka.compute()


def localisation_summary(matrix: torch.Tensor, grid: tuple[int, int]) -> dict:
    """How well tokens localise: the fraction of tokens whose most similar patch is their own, the mean
    CKA with the own patch and with the other patches, and the same fraction for interior tokens only."""
    gh, gw = grid
    own = matrix.diagonal()
    off = matrix[~torch.eye(len(matrix), dtype=torch.bool)]
    hits = matrix.argmax(1) == torch.arange(len(matrix))
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    interior = ((rows > 0) & (rows < gh - 1) & (cols > 0) & (cols < gw - 1)).flatten()
    return {"own_patch_is_best": hits.double().mean().item(),
            "interior_own_patch_is_best": hits[interior].double().mean().item() if interior.any() else float("nan"),
            "mean_own": own.mean().item(), "mean_other": off.mean().item()}


def _infer_grid(features: torch.Tensor, num_prefix_tokens: int) -> tuple[int, int]:
    if features.ndim == 4:
        return tuple(features.shape[-2:])
    side = round((features.shape[1] - num_prefix_tokens) ** 0.5)
    if side * side != features.shape[1] - num_prefix_tokens:
        raise ValueError(f"cannot infer a square grid from {features.shape[1]} tokens: pass grid=(gh, gw)")
    return side, side


def effective_receptive_field(model: torch.nn.Module, images: torch.Tensor, layer: str,
                              grid: tuple[int, int] | None = None, num_prefix_tokens: int | None = None,
                              device: str | torch.device = "cpu") -> torch.Tensor:
    """Effective receptive field of the centre position of ``layer`` (paper Fig 6).

    For each image, the gradient of the centre token's channels, summed, with respect to the input:
    ``|∂ Σ_c f_c(centre) / ∂x|``, summed over input channels, averaged over the images, and normalised to
    a maximum of 1. ``grid`` (the layer's ``(gh, gw)``) and ``num_prefix_tokens`` are inferred from the
    features and the model when not given. Returns float64 ``(H, W)``.
    """
    if num_prefix_tokens is None:
        num_prefix_tokens = getattr(model, "num_prefix_tokens", 0)
    prep = preprocessor(model)
    model.eval().to(device)
    x = prep(images.to(device)).detach().requires_grad_(True)
    with Capture(model, layer, detach=False) as cap, torch.enable_grad():
        features = cap(x)[layer]
        gh, gw = grid or _infer_grid(features, num_prefix_tokens)
        tokens = grid_tokens(features, (gh, gw), num_prefix_tokens)
        tokens[:, (gh // 2) * gw + gw // 2].sum().backward()
    erf = x.grad.abs().sum(1).mean(0).double()
    peak = erf.max()
    if peak == 0:
        raise ValueError(f"the centre of {layer!r} does not depend on the input (zero gradient)")
    return (erf / peak).cpu()


def erf_radius(erf: torch.Tensor, fraction: float = 0.5) -> float:
    """Radius (pixels) around the image centre that holds ``fraction`` of the receptive field's mass."""
    h, w = erf.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    radius = torch.sqrt((rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2).flatten()
    order = torch.argsort(radius)
    mass = torch.cumsum(erf.flatten()[order], 0)
    return radius[order][torch.searchsorted(mass, fraction * mass[-1])].item()

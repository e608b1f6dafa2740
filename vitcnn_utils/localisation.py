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
from .hooks import Capture, iter_features
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
    CKA with the own patch and with the other patches, and the same fraction for interior tokens only.

    Undefined (NaN) entries, from a token or a patch that is constant over the images (e.g. an always-blank
    image corner), are ignored: a token's best patch is the argmax over its defined entries, the fractions
    count only tokens whose own-patch CKA is defined, and the means run over defined entries.
    ``undefined_fraction`` is the fraction of NaN entries of ``matrix``.
    """
    gh, gw = grid
    matrix = matrix.double()
    n = len(matrix)
    own = matrix.diagonal()
    off = matrix[~torch.eye(n, dtype=torch.bool)]
    hits = torch.nan_to_num(matrix, nan=-torch.inf).argmax(1) == torch.arange(n)
    defined = ~torch.isnan(own)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    interior = ((rows > 0) & (rows < gh - 1) & (cols > 0) & (cols < gw - 1)).flatten()

    def fraction(mask):
        mask = mask & defined
        return hits[mask].double().mean().item() if mask.any() else float("nan")

    return {"own_patch_is_best": fraction(torch.ones(n, dtype=torch.bool)),
            "interior_own_patch_is_best": fraction(interior),
            "mean_own": own.nanmean().item(), "mean_other": off.nanmean().item(),
            "undefined_fraction": torch.isnan(matrix).double().mean().item()}


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


# ---------------------------------------------------------------------------------------------------------
# Chapter "spatial" (paper Figs 9–10): token grids of any model and token heatmaps (the Fig 11 token probes are
# in :mod:`vitcnn_utils.probes`).

def token_geometry(model: torch.nn.Module, layer: str, batches: Iterable,
                   device: str | torch.device = "cpu") -> dict:
    """How ``layer``'s tokens sit on the input: ``{"patch_size": P (pixels), "grid": (gh, gw),
    "num_prefix_tokens": k}``, the arguments :func:`token_patch_cka` needs.

    A ViT (a model with ``patch_embed``) gives its patch size, patch grid and prefix (CLS/register) tokens.
    For a CNN one image of ``batches`` is run to read the ``(gh, gw)`` size of ``layer``'s map; its
    "tokens" are the channel vectors at each position and each covers a ``P × P`` input patch with
    ``P = H / gh = W / gw`` (the map must tile the input exactly, else ``ValueError``).
    """
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        ph, pw = (embed.patch_size, embed.patch_size) if isinstance(embed.patch_size, int) else embed.patch_size
        if ph != pw:
            raise ValueError(f"non-square patches {ph}×{pw} are not supported")
        return {"patch_size": int(ph), "grid": tuple(int(g) for g in embed.grid_size),
                "num_prefix_tokens": int(getattr(model, "num_prefix_tokens", 0))}
    images, labels = next(iter(batches))
    features = next(iter_features(model, [(images[:1], labels[:1])], layer, device=device))[0][layer]
    if features.ndim != 4:
        raise ValueError(f"{layer!r} gives {tuple(features.shape)}, not a (B, C, H, W) map; for token models "
                         "pass a model with patch_embed")
    (h, w), (gh, gw) = images.shape[-2:], features.shape[-2:]     # preprocessing keeps the image size
    if h % gh or w % gw or h // gh != w // gw:
        raise ValueError(f"the {gh}×{gw} map of {layer!r} does not tile the {h}×{w} input in square patches")
    return {"patch_size": h // gh, "grid": (int(gh), int(gw)), "num_prefix_tokens": 0}


def position_maps(matrix: torch.Tensor, grid: tuple[int, int], positions) -> torch.Tensor:
    """The rows of a token–patch matrix ``(gh·gw, gh·gw)`` (from :func:`token_patch_cka`) for the tokens at
    ``positions`` (``(row, col)`` pairs), each laid out on the grid: float64 ``(len(positions), gh, gw)``;
    entry ``[k, r, c]`` is the CKA of token ``positions[k]`` with the input patch at ``(r, c)``."""
    gh, gw = grid
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
    """The counts behind :func:`localisation_summary`'s fractions, as integers (so that a rule comparing
    them never turns on float rounding): ``own_patch_count`` / ``interior_own_patch_count``, the tokens
    (all / off the border of the grid) whose most similar input patch is their own; ``tokens`` /
    ``interior_tokens``, how many tokens there are; ``defined`` / ``interior_defined``, how many of them
    have a defined (non-NaN) own-patch CKA. A token with an undefined own-patch CKA is never a hit."""
    gh, gw = grid
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

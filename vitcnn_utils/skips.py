"""Skip connections (paper Fig 7): how much of a representation travels along the identity path.

For a residual sublayer ``z ↦ z + f(z)``, the ratio ``‖z‖ / ‖f(z)‖`` of the norms of the identity path and of
the residual branch. For a timm ViT, per block and sublayer (attention, MLP), per token (token 0 = CLS when
present), norms over channels, ratios averaged over images: ``(2·blocks, tokens)``. For a timm ResNet, per
bottleneck unit, norms over the whole unit tensor (the shortcut after any downsampling, and ``bn3``, the
branch before the addition), averaged over images: ``(units,)``. Under ``torch.distributed`` the sums
are all-reduced.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from .hooks import mean_over_images


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

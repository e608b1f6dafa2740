"""Model construction: the zoo's small architectures and :func:`load_model` for any timm name.

Zoo architectures are described by plain dicts (stored in ``zoo/manifest.json``) so that a manifest entry
alone rebuilds the network:

* ``{"kind": "vit", "patch_size": 4, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0,
  "pool": "cls" | "gap", "no_skip_blocks": [i, ...]}`` — a timm ``VisionTransformer`` on 28×28 grey
  images: 4×4 patches → a 7×7 grid of 49 tokens (+1 CLS token when ``pool == "cls"``).
* ``{"kind": "resnet", "layers": [1, 2, 2, 1], "channels": [16, 32, 64, 128], "stem_width": 64}`` —
  a timm bottleneck ``ResNet`` with a 3×3 stride-1 stem and no max-pool, run at output stride 16, so its
  four stages see 28, 14, 7 and 7 (dilated) pixels: the last stage's 7×7 map matches the ViT grid.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import Block, VisionTransformer


class NoSkipBlock(Block):
    """A ViT block with both residual connections removed (paper Fig. 8):
    ``x ↦ mlp(norm2(attn(norm1(x))))``. Same parameters and submodule names as :class:`Block`."""

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        x = self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def build_vit(patch_size: int = 4, embed_dim: int = 128, depth: int = 6, num_heads: int = 4,
              mlp_ratio: float = 2.0, pool: str = "cls", no_skip_blocks=(), img_size: int = 28,
              in_chans: int = 1, num_classes: int = 10) -> VisionTransformer:
    """A small timm ViT; ``pool="cls"`` classifies from a CLS token, ``pool="gap"`` has no CLS token and
    classifies from the mean of the patch tokens."""
    if pool not in ("cls", "gap"):
        raise ValueError(f"pool must be 'cls' or 'gap', got {pool!r}")
    model = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                              num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                              mlp_ratio=mlp_ratio, class_token=pool == "cls",
                              global_pool="token" if pool == "cls" else "avg", qkv_bias=True)
    model.vitcnn_input = "fashion-mnist"
    for i in no_skip_blocks:
        if not 0 <= i < depth:
            raise ValueError(f"no_skip_blocks entry {i} is not a block index of a depth-{depth} ViT")
        model.blocks[i].__class__ = NoSkipBlock  # same parameters, forward without the two skips
    return model


def build_resnet(layers=(1, 2, 2, 1), channels=(16, 32, 64, 128), stem_width: int = 64, in_chans: int = 1,
                 num_classes: int = 10) -> ResNet:
    """A small timm bottleneck ResNet for 28×28 inputs (see the module docstring)."""
    if len(layers) != 4 or len(channels) != 4:
        raise ValueError("timm's ResNet has exactly four stages: give four entries in layers and channels")
    model = ResNet(block=Bottleneck, layers=tuple(layers), channels=tuple(channels), in_chans=in_chans,
                   num_classes=num_classes, output_stride=16)
    if stem_width != model.conv1.out_channels:
        raise ValueError(f"stem_width must be {model.conv1.out_channels} (timm's first stage expects it)")
    model.conv1 = torch.nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.vitcnn_input = "fashion-mnist"
    return model


def build_architecture(arch: dict) -> torch.nn.Module:
    """Build an (untrained) network from a zoo architecture dict."""
    spec = dict(arch)
    kind = spec.pop("kind", None)
    builders = {"vit": build_vit, "resnet": build_resnet}
    if kind not in builders:
        raise ValueError(f"architecture kind must be one of {sorted(builders)}, got {kind!r}")
    return builders[kind](**spec)


def load_model(name: str, pretrained: bool = False, weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", **timm_kwargs) -> torch.nn.Module:
    """Load a model in eval mode.

    Args:
        name: ``"zoo:<name>"`` for one of the project's trained Fashion-MNIST models (see
            :func:`vitcnn_utils.zoo.available`), ``"arch:<name>"`` for the same architecture untrained
            (seeded random init), or any timm model name, e.g.
            ``"vit_base_patch16_224.augreg2_in21k_ft_in1k"`` or ``"resnet50"``.
        pretrained: timm names only: fetch timm's pretrained weights (needs the Hugging Face hub).
        weights: timm names only: a local weights file (``.safetensors``, ``.pth``, ``.bin``) to load
            instead of fetching; use this on machines with no network.
        device: where to put the model.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``num_classes``, ``img_size``).
    """
    if name.startswith("arch:"):  # an untrained zoo architecture (seed 0): for smoke tests and timing
        from . import zoo
        if name[len("arch:"):] not in zoo.SPECS:
            raise ValueError(f"no zoo architecture {name[5:]!r}; known: {', '.join(sorted(zoo.SPECS))}")
        torch.manual_seed(0)
        return build_architecture(zoo.SPECS[name[len("arch:"):]].arch).eval().to(device)
    if name.startswith("zoo:"):
        if pretrained or weights is not None or timm_kwargs:
            raise ValueError("zoo models take no pretrained/weights/timm arguments: they ship their weights")
        from . import zoo
        return zoo.load(name[len("zoo:"):], device=device)
    if weights is not None:
        if pretrained:
            raise ValueError("pass either pretrained=True (fetch from the hub) or weights=FILE, not both")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist")
    try:
        model = timm.create_model(name, pretrained=pretrained, **timm_kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"{name!r} is neither a timm model nor 'zoo:<name>' "
                             "(see timm.list_models() and vitcnn_utils.zoo.available())") from None
        raise
    except Exception as err:
        if pretrained and weights is None:
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            raise RuntimeError(
                f"could not fetch pretrained weights for {name!r}"
                f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {type(err).__name__}: {err}.\n"
                f"On a machine with network access, download the weights file of {name!r} from the Hugging "
                f"Face hub (e.g. `hf download timm/{name} model.safetensors`), copy it here and call "
                f"load_model({name!r}, weights='/path/to/model.safetensors').") from None
        raise
    if weights is not None:  # strict: every tensor of the file must match the architecture, no silent re-init
        timm.models.load_checkpoint(model, str(weights), strict=True)
    return model.eval().to(device)


def load_named(name: str, weights: Mapping[str, str] | None = None, pretrained: bool = False,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """:func:`load_model` as the chapters call it: one ``weights`` table ``{timm name: local weights file}``
    for all of a chapter's models, and ``pretrained`` (fetch from the hub) for timm names not in the table.

    Zoo (``zoo:``) and untrained (``arch:``) names ignore ``pretrained`` and may not appear in ``weights``. A
    timm name with neither a weights file nor ``pretrained=True`` gets random weights (fine for timing), with
    a warning saying so.
    """
    weights = dict(weights or {})
    if name.startswith(("zoo:", "arch:")):
        if name in weights:
            raise ValueError(f"{name!r} ships its own weights (or none): remove it from the weights table")
        return load_model(name, device=device)
    if name in weights:
        return load_model(name, weights=weights[name], device=device)
    if not pretrained:
        warnings.warn(f"{name!r} has random weights: give it a weights file (weights: {{{name}: FILE}}) or set "
                      f"pretrained: true", stacklevel=2)
    return load_model(name, pretrained=pretrained, device=device)


def preprocessor(model: torch.nn.Module):
    """The function mapping raw images to ``model``'s input: Fashion-MNIST standardisation for the zoo
    (``uint8`` in, see :func:`vitcnn_utils.data.normalize`), else the mean/std normalisation of the timm
    model's pretrained config (``uint8`` or float images in [0, 1], already resized)."""
    from .data import normalize
    if getattr(model, "vitcnn_input", None) == "fashion-mnist":
        return normalize
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, -1, 1, 1)

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (images - mean.to(images.device)) / std.to(images.device)
    return preprocess

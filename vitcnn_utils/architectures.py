"""The zoo's small architectures, built from plain dicts (stored in ``zoo/manifest.json``) so that a manifest
entry alone rebuilds the network:

* ``{"kind": "vit", "patch_size": 4, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0,
  "pool": "cls" | "gap", "no_skip_blocks": [i, ...]}`` — a timm ``VisionTransformer`` on 28×28 grey
  images: 4×4 patches → a 7×7 grid of 49 tokens (+1 CLS token when ``pool == "cls"``).
* ``{"kind": "resnet", "layers": [1, 2, 2, 1], "channels": [16, 32, 64, 128], "stem_width": 64}`` —
  a timm bottleneck ``ResNet`` with a 3×3 stride-1 stem and no max-pool, run at output stride 16, so its
  four stages see 28, 14, 7 and 7 (dilated) pixels: the last stage's 7×7 map matches the ViT grid.

Contracts of the built models (read elsewhere, so stated here):

* ``model.vitcnn_input = "fashion-mnist"``: set on every zoo architecture; :func:`vitcnn_utils.data.preprocessor`
  reads it and gives the model the Fashion-MNIST standardisation instead of a timm config's mean/std.
* ``model.zoo_entry``: set by :func:`vitcnn_utils.zoo.load` on a loaded zoo model: its manifest entry
  (training data, steps, accuracy), read by :func:`vitcnn_utils.zoo.training_summary`.
* A ViT block listed in ``no_skip_blocks`` has its class swapped to :class:`NoSkipBlock`: same parameters and
  submodule names (so weights load and layers capture as usual), a forward without the two residual additions.
  :func:`vitcnn_utils.architectures.removed_blocks` finds them by that class.

Imports run one way: this module needs only timm and torch.
"""
from __future__ import annotations

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


def removed_blocks(model: torch.nn.Module) -> list[int]:
    """Indices of the ViT blocks whose two skip connections were removed (instances of
    :class:`vitcnn_utils.architectures.NoSkipBlock`); ``[]`` for an intact ViT."""
    from .architectures import NoSkipBlock
    return [i for i, block in enumerate(getattr(model, "blocks", [])) if isinstance(block, NoSkipBlock)]

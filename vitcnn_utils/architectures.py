"""The zoo's small architectures, built from plain dicts (stored in ``zoo/manifest.json``) so that a manifest
entry alone rebuilds the network:

* ``{"kind": "vit", "patch_size": 4, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0,
  "pool": "cls" | "gap", "no_skip_blocks": [i, ...], "pos_embed": "learned" | "sincos", "distilled": bool}``
  — a timm ``VisionTransformer`` on 28×28 grey images: 4×4 patches → a 7×7 grid of 49 tokens (+1 CLS token
  when ``pool == "cls"``, +1 distillation token when ``distilled``, as DeiT's). The last two keys are the
  recipe ablation's and are left out of the zoo's own entries (their defaults).
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
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Block, VisionTransformer


class NoSkipBlock(Block):
    """A ViT block with both residual connections removed (paper Fig. 8):
    ``x ↦ mlp(norm2(attn(norm1(x))))``. Same parameters and submodule names as :class:`Block`."""

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        x = self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def sincos_position_embedding(grid: tuple[int, int], dim: int, prefix_tokens: int = 0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (as MAE's): ``(1, prefix_tokens + rows·cols, dim)`` float32.

    The first ``dim/2`` channels encode the token's row, the other half its column; each half is
    ``[sin(p·ω_k), cos(p·ω_k)]`` with ``ω_k = 10000^(−k/(dim/4))``, ``k = 0 … dim/4 − 1``, and ``p`` the row or
    column index. Prefix tokens (CLS, distillation) get zeros. ``dim`` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embeddings need a width divisible by 4, got {dim}")
    rows, cols = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")

    def encode(pos):                                           # (tokens,) -> (tokens, dim/2)
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)
    table = torch.cat([encode(r), encode(c)], dim=1)
    return torch.cat([torch.zeros(prefix_tokens, dim, dtype=torch.float64), table]).unsqueeze(0).float()


def build_vit(patch_size: int = 4, embed_dim: int = 128, depth: int = 6, num_heads: int = 4,
              mlp_ratio: float = 2.0, pool: str = "cls", no_skip_blocks=(), pos_embed: str = "learned",
              distilled: bool = False, img_size: int = 28, in_chans: int = 1,
              num_classes: int = 10) -> VisionTransformer:
    """A small timm ViT; ``pool="cls"`` classifies from a CLS token, ``pool="gap"`` has no CLS token and
    classifies from the mean of the patch tokens.

    ``pos_embed="sincos"`` fixes the position embeddings to :func:`sincos_position_embedding` (not trained:
    ``requires_grad`` off); ``distilled=True`` builds timm's DeiT ``VisionTransformerDistilled`` (a CLS and a
    distillation token, two heads averaged at inference; needs ``pool="cls"``)."""
    if pool not in ("cls", "gap"):
        raise ValueError(f"pool must be 'cls' or 'gap', got {pool!r}")
    if pos_embed not in ("learned", "sincos"):
        raise ValueError(f"pos_embed must be 'learned' or 'sincos', got {pos_embed!r}")
    if distilled and pool != "cls":
        raise ValueError("a distilled ViT reads its CLS and distillation tokens: use pool='cls' with distilled=True")
    cls = VisionTransformerDistilled if distilled else VisionTransformer
    model = cls(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                class_token=pool == "cls", global_pool="token" if pool == "cls" else "avg", qkv_bias=True)
    if pos_embed == "sincos":
        fixed = sincos_position_embedding(model.patch_embed.grid_size, embed_dim, model.num_prefix_tokens)
        model.pos_embed = torch.nn.Parameter(fixed, requires_grad=False)
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

"""Model construction: the zoo's small architectures and :func:`load_model` for any timm name.

Zoo architectures are described by plain dicts (stored in ``zoo/manifest.json``) so that a manifest entry
alone rebuilds the network:

* ``{"kind": "vit", "patch_size": 4, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0,
  "pool": "cls" | "gap", "no_skip_blocks": [i, ...]}`` — a timm ``VisionTransformer`` on 28×28 grey
  images: 4×4 patches → a 7×7 grid of 49 tokens (+1 CLS token when ``pool == "cls"``).
* ``{"kind": "resnet", "layers": [1, 2, 2, 1], "channels": [16, 32, 64, 128], "stem_width": 64}`` —
  a timm bottleneck ``ResNet`` with a 3×3 stride-1 stem and no max-pool, run at output stride 16, so its
  four stages see 28, 14, 7 and 7 (dilated) pixels: the last stage's 7×7 map matches the ViT grid.

Images go in raw, through :func:`preprocessor`: ``uint8`` pixel values 0..255 or float images in [0, 1]
(torchvision's ``ToTensor()``), the same output either way, for zoo and timm models alike; other floats are
refused (see :func:`vitcnn_utils.data.to_unit_float`).

Pretrained timm weights come from local files (``weights=``) or the Hugging Face hub cache: the project runs
offline by default, so ``pretrained=True`` never waits on an unreachable network. Go online with
``VITCNN_ONLINE=1`` (or ``HF_HUB_OFFLINE=0``) in the environment; ``HF_HUB_OFFLINE=1`` always stays offline.
"""
from __future__ import annotations

import contextlib
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


_TRUE, _FALSE = ("1", "ON", "YES", "TRUE"), ("0", "OFF", "NO", "FALSE")  # huggingface_hub's spellings


def hub_offline() -> bool:
    """Whether :func:`load_model` keeps the Hugging Face hub offline (cache and local files only): yes unless
    ``VITCNN_ONLINE=1`` is set, or ``HF_HUB_OFFLINE`` is explicitly false (``0``); ``HF_HUB_OFFLINE=1`` wins
    over ``VITCNN_ONLINE``. Offline, a model not in the hub cache fails at once instead of after the hub
    client's connection retries (about 47 s per model on a machine without network)."""
    hf = _hf_hub_offline_env()
    if hf in _TRUE:
        return True
    return not (hf in _FALSE or os.environ.get("VITCNN_ONLINE", "").strip().upper() in _TRUE)


def _hf_hub_offline_env() -> str:
    """``HF_HUB_OFFLINE`` (or its older name ``TRANSFORMERS_OFFLINE``) as huggingface_hub reads it, upper case."""
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().upper()


@contextlib.contextmanager
def _hub_mode(offline: bool):
    """huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import: set its flag for the duration instead."""
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub client: timm cannot fetch anything anyway
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hub_file(name: str) -> tuple[str, str]:
    """``(hub repo, file)`` of timm's pretrained weights for ``name``: its pretrained config's ``hf_hub_id``
    (``"resnet18"`` → ``timm/resnet18.a1_in1k``, the default tag), else ``timm/<name>``."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - a name timm cannot resolve: fall back to the plain name
        cfg = None
    repo = getattr(cfg, "hf_hub_id", None) or f"timm/{name}"
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    return repo, filename


def _weights_file(weights: str | os.PathLike) -> Path:
    path = Path(weights)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
        raise IsADirectoryError(f"weights {path} is a folder: pass the weights file itself"
                                + (f", e.g. {path / found[0]} (it holds {', '.join(found)})" if found else
                                   " (it holds no .safetensors/.pth/.pt/.bin file)"))
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return path


def load_model(name: str, pretrained: bool = False, weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", **timm_kwargs) -> torch.nn.Module:
    """Load a model in eval mode. Its input: raw images through :func:`preprocessor` (``uint8`` 0..255 or
    float in [0, 1]).

    Args:
        name: ``"zoo:<name>"`` for one of the project's trained Fashion-MNIST models (see
            :func:`vitcnn_utils.zoo.available`), ``"arch:<name>"`` for the same architecture untrained
            (seeded random init), or any timm model name, e.g.
            ``"vit_base_patch16_224.augreg2_in21k_ft_in1k"`` or ``"resnet50"``.
        pretrained: timm names only: timm's pretrained weights, from the Hugging Face hub cache; fetched from
            the hub only when online (``VITCNN_ONLINE=1`` or ``HF_HUB_OFFLINE=0``, see :func:`hub_offline`).
        weights: timm names only: a local weights file (``.safetensors``, ``.pth``, ``.bin``) to load
            instead of fetching; use this on machines with no network. Every tensor must match.
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
        weights = _weights_file(weights)
    offline = hub_offline()
    try:
        with _hub_mode(offline):
            model = timm.create_model(name, pretrained=pretrained, **timm_kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"{name!r} is neither a timm model nor 'zoo:<name>' "
                             "(see timm.list_models() and vitcnn_utils.zoo.available())") from None
        raise
    except Exception as err:
        if pretrained and weights is None:
            repo, filename = _hub_file(name)
            if not offline:
                mode = "online"
            elif _hf_hub_offline_env() in _TRUE:
                mode = "offline: HF_HUB_OFFLINE=1 is set and the hub cache has no copy; HF_HUB_OFFLINE=0 goes online"
            else:
                mode = ("offline, the project's default, and the hub cache has no copy; VITCNN_ONLINE=1 in the "
                        "environment goes online")
            detail = " ".join(f"{type(err).__name__}: {err}".split())
            raise RuntimeError(
                f"could not fetch pretrained weights for {name!r} from the Hugging Face hub repo {repo} "
                f"({mode}; {detail}). On a machine with network access, download them "
                f"(`hf download {repo} {filename}`), copy the file here and call "
                f"load_model({name!r}, weights='/path/to/{filename}').") from None
        raise
    if weights is not None and weights.suffix.lower() in (".npz", ".npy"):  # big_vision format: timm's reader
        timm.models.load_checkpoint(model, str(weights), strict=True)
    elif weights is not None:  # strict: every tensor of the file must match the architecture, no silent re-init
        try:
            state_dict = timm.models.load_state_dict(str(weights))
        except Exception as err:  # noqa: BLE001 - safetensors, pickle and zip readers raise many types
            raise ValueError(f"could not read weights file {weights} ({type(err).__name__}: {err}): is it "
                             f"truncated or not a weights file? Download it again") from None
        model.load_state_dict(state_dict, strict=True)
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
    """The function mapping raw images ``(n, C, H, W)`` to ``model``'s float32 input of the same shape.

    Raw images are ``uint8`` (or other integer) pixel values 0..255, or float images in [0, 1] such as
    torchvision's ``ToTensor()`` gives: both give the same output, for every model. Float images outside
    [0, 1] (0..255 floats, images already normalised) or with NaN are a ValueError: nothing is guessed or
    clamped (see :func:`vitcnn_utils.data.to_unit_float`).

    Zoo models (28×28 grey) get the Fashion-MNIST standardisation (:func:`vitcnn_utils.data.normalize`);
    timm models the mean/std normalisation of their pretrained config (images already resized).
    """
    from .data import normalize, to_unit_float
    if getattr(model, "vitcnn_input", None) == "fashion-mnist":
        return normalize
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, -1, 1, 1)

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        images = to_unit_float(images)
        return (images - mean.to(images.device)) / std.to(images.device)
    return preprocess

"""Loading models by name: :func:`load_model` for the zoo (``zoo:<name>``), its untrained architectures
(``arch:<name>``) and any timm name; :func:`load_named` as the chapters call it. The zoo's architectures
themselves are built in :mod:`vitcnn_utils.architectures`.

Images go in raw, through :func:`vitcnn_utils.data.preprocessor`: ``uint8`` pixel values 0..255 or float images in [0, 1]
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

from . import zoo
from .architectures import build_architecture


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
    """Load a model in eval mode. Its input: raw images through :func:`vitcnn_utils.data.preprocessor` (``uint8`` 0..255 or
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
        if name[len("arch:"):] not in zoo.SPECS:
            raise ValueError(f"no zoo architecture {name[5:]!r}; known: {', '.join(sorted(zoo.SPECS))}")
        torch.manual_seed(0)
        return build_architecture(zoo.SPECS[name[len("arch:"):]].arch).eval().to(device)
    if name.startswith("zoo:"):
        if pretrained or weights is not None or timm_kwargs:
            raise ValueError("zoo models take no pretrained/weights/timm arguments: they ship their weights")
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

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
import math
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
            (seeded random init) or with the weights of a local file (``weights=``; no ``pretrained``, no
            timm arguments), or any timm model name, e.g.
            ``"vit_base_patch16_224.augreg2_in21k_ft_in1k"`` or ``"resnet50"``.
        pretrained: timm names only: timm's pretrained weights, from the Hugging Face hub cache; fetched from
            the hub only when online (``VITCNN_ONLINE=1`` or ``HF_HUB_OFFLINE=0``, see :func:`hub_offline`).
        weights: timm and ``arch:`` names: a local weights file (``.safetensors``, ``.pth``, ``.bin``, or
            big_vision ``.npz``) to load instead of fetching; use this on machines with no network. Loaded
            strictly, whatever the format: every tensor of the file must match one of the model's, with the
            same shape, and every parameter must come from the file (a RuntimeError names each that does not).
        device: where to put the model.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``num_classes``, ``img_size``).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a model name (a non-empty string): 'zoo:<name>' (see "
                        f"vitcnn_utils.zoo.available()), 'arch:<name>' or a timm model name such as 'resnet50', "
                        f"got {name!r}")
    if name.startswith("arch:"):  # a zoo architecture: untrained (seed 0), or with the weights of a local file
        arch = name[len("arch:"):]
        if arch not in zoo.SPECS:
            raise ValueError(f"no zoo architecture {arch!r}; known: {', '.join(sorted(zoo.SPECS))}")
        if pretrained:
            raise ValueError(f"{name!r} has no pretrained weights: use 'zoo:{arch}' for the project's trained "
                             f"weights, or weights=FILE for your own")
        if timm_kwargs:
            raise ValueError(f"{name!r} is fixed by the zoo manifest and takes no timm arguments (got "
                             f"{', '.join(sorted(timm_kwargs))}): build another one with "
                             f"vitcnn_utils.architectures.build_vit/build_resnet")
        path = _weights_file(weights) if weights is not None else None
        torch.manual_seed(0)
        model = build_architecture(zoo.SPECS[arch].arch)
        if path is not None:
            _load_weights(model, path, name)
        return model.eval().to(device)
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
    if weights is not None:
        _load_weights(model, weights, name)
    return model.eval().to(device)


def _load_weights(model: torch.nn.Module, path: Path, name: str) -> None:
    """Load the weights file ``path`` into ``model``, strictly whatever its format: every tensor of the file
    must match one of the model's, with the same shape, and every one of the model's parameters must come from
    the file; otherwise a RuntimeError names the file and each missing, unexpected and mismatched tensor."""
    if path.suffix.lower() in (".npz", ".npy"):  # big_vision format: timm's reader, checked by _NpzAudit
        if not hasattr(model, "load_pretrained"):
            raise ValueError(f"{name!r} cannot read .npz weights ({path}): timm reads them for ViTs and ResNetV2 "
                             f"only; convert the file to .safetensors")
        with _NpzAudit(model) as audit:
            timm.models.load_checkpoint(model, str(path), strict=True)
        problems = audit.problems()
    else:
        try:
            state_dict = timm.models.load_state_dict(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors, pickle and zip readers raise many types
            raise ValueError(f"could not read weights file {path} ({type(err).__name__}: {err}): is it "
                             f"truncated or not a weights file? Download it again") from None
        try:
            model.load_state_dict(state_dict, strict=True)
            problems = []
        except RuntimeError as err:
            problems = [" ".join(str(err).split())]
    if problems:
        raise RuntimeError(f"weights file {path} does not match {name!r} (every tensor must match): "
                           + "; ".join(problems)
                           + ". Pass the architecture arguments the file was saved with, or the right file")


def _listed(names, limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


class _NpzAudit(torch.overrides.TorchFunctionMode):
    """Watches timm's ``.npz`` reader (which copies what it recognises and silently skips, resamples or
    adapts the rest): which arrays of the file it reads and which of the model's parameters it writes
    (``copy_``), so that :meth:`problems` can name the tensors that did not match one to one."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.params = dict(model.named_parameters())
        self.owner = {p.data_ptr(): n for n, p in self.params.items()}
        self.read: dict[str, tuple] = {}      # file key -> shape, every array read
        self.pending: list[tuple] = []        # shapes read since the last copy_
        self.mismatched: list[str] = []
        self.written: set[str] = set()
        self.files: list[str] = []
        self.patched: list[tuple] = []

    def __enter__(self):
        import sys
        from timm.models import _helpers
        original = _helpers._load_npz_checkpoint
        audit = self

        def opened(*args, **kwargs):
            npz = original(*args, **kwargs)
            audit.files = list(npz.files)
            return _RecordingNpz(npz, audit)
        for module in list(sys.modules.values()):
            if (getattr(module, "__name__", "").startswith("timm.models")
                    and getattr(module, "_load_npz_checkpoint", None) is original):
                self.patched.append((module, original))
                module._load_npz_checkpoint = opened
        return super().__enter__()

    def __exit__(self, *exc):
        for module, original in self.patched:
            module._load_npz_checkpoint = original
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.copy_ and args and isinstance(args[0], torch.Tensor):
            target = self.owner.get(args[0].data_ptr())
            if target is not None:
                self.written.add(target)
                numel = args[0].numel()
                whole = [math.prod(shape) for _, shape in self.pending]
                per_block = [math.prod(shape[1:]) for _, shape in self.pending]  # stacked: one block's slice
                if self.pending and numel not in (sum(whole), sum(per_block), *whole, *per_block):
                    read = ", ".join(f"{key} {tuple(shape)}" for key, shape in self.pending)
                    self.mismatched.append(f"{target} {tuple(args[0].shape)} from {read}")
                self.pending = []
        return func(*args, **(kwargs or {}))

    def problems(self) -> list[str]:
        if not self.patched or not self.files:
            return ["this timm version's .npz reader could not be checked: convert the file to .safetensors"]
        out = []
        missing = [n for n in self.params if n not in self.written]
        if missing:
            out.append(f"missing from the file (left at random init): {_listed(missing)}")
        unexpected = [k for k in self.files if k not in self.read]
        if unexpected:
            out.append(f"unexpected (in the file, not in the model): {_listed(unexpected)}")
        in_file = sum(math.prod(shape) for shape in self.read.values())
        in_model = sum(p.numel() for n, p in self.params.items() if n in self.written)
        if self.mismatched or (in_file != in_model and not out):  # else a consequence of the above
            detail = _listed(self.mismatched) if self.mismatched else f"{in_file} values read, {in_model} written"
            out.append(f"size mismatch (timm would resample or adapt these): {detail}")
        return out


class _RecordingNpz:
    """An ``NpzFile`` that tells its :class:`_NpzAudit` every array read from it."""

    def __init__(self, npz, audit: _NpzAudit):
        self._npz, self._audit = npz, audit

    def __getitem__(self, key):
        array = self._npz[key]
        self._audit.read[key] = tuple(array.shape)
        self._audit.pending.append((key, tuple(array.shape)))
        return array

    def __contains__(self, key):
        return key in self._npz

    def __getattr__(self, attr):
        return getattr(self._npz, attr)


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

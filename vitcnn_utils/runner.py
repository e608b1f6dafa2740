"""The one forward loop. Every measurement that runs a model without gradients (:mod:`vitcnn_utils.measure`, and
through it the CKA heatmaps command) goes through :func:`forward_passes`, which owns:

* the device: a model is moved to ``device`` when one is given, else it stays where it is; each minibatch
  goes to its model's device;
* preprocessing: raw ``uint8`` (or float [0, 1]) images through :func:`vitcnn_utils.data.preprocessor`;
* capture: one :class:`~vitcnn_utils.hooks.Capture` per model *object* (a model under several names runs once
  per minibatch, capturing the union of its names' layers), with an optional per-layer ``transform`` applied
  inside the hook (e.g. reducing features to Gram matrices);
* eval mode, ``torch.no_grad()`` around each pass (never held across a ``yield``, so the caller's grad mode
  is untouched) and optional autocast (``amp_dtype``);
* progress: a tqdm bar when ``progress`` names it (``TQDM_DISABLE=1`` is honoured).

Distributed sharding is the batches' business (:func:`vitcnn_utils.data.analysis_batches` with ``shard=``);
sums over images are all-reduced by the measurement that owns them (:func:`mean_over_images` here).
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack

import torch
from tqdm.auto import tqdm

from .data import preprocessor
from .distributed import all_reduce_sum
from .hooks import Capture, resolve_layers

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # command-line names of amp_dtype


def forward_passes(models: Mapping[str, torch.nn.Module], batches: Iterable,
                   layers: Mapping[str, str | Sequence[str]] | None = None, *,
                   device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None,
                   transform: Callable[[torch.Tensor], object] | None = None,
                   progress: str | None = None) -> Iterator[tuple[dict[str, OrderedDict], torch.Tensor]]:
    """Run every model on every raw ``(images, labels)`` minibatch of ``batches``.

    Args:
        models: ``{name: model}``; all see the same images.
        layers: ``{name: layers}`` for :class:`~vitcnn_utils.hooks.Capture` (missing names: ``"default"``).
        device: move the models there (default: leave each where it is).
        amp_dtype: autocast dtype for the forward passes (e.g. ``torch.bfloat16``); None = full precision.
        transform: applied to each captured feature inside its hook (see :class:`~vitcnn_utils.hooks.Capture`).
        progress: the progress bar's label; None = no bar.

    Yields:
        ``({name: {layer: feature}}, labels)`` per minibatch; each name's layers in execution order.
    """
    layers = layers or {}
    wanted = {name: resolve_layers(model, layers.get(name, "default")) for name, model in models.items()}
    first: dict[int, str] = {}                         # model object -> the first name it goes by
    for name, model in models.items():
        first.setdefault(id(model), name)
    total = len(batches) if hasattr(batches, "__len__") else None
    with ExitStack() as stack:
        runs = {}                                      # first name -> (capture, preprocess, device)
        for name, model in models.items():
            if first[id(model)] != name:
                continue
            if device is not None:
                model.to(device)
            model.eval()
            union = list(dict.fromkeys(layer for other, m in models.items() if m is model for layer in wanted[other]))
            cap = stack.enter_context(Capture(model, union, transform=transform))
            runs[name] = (cap, preprocessor(model), _device_of(model))
        for images, labels in tqdm(batches, desc=progress, total=total, leave=False, disable=progress is None):
            captured = {}
            for name, (cap, prep, dev) in runs.items():
                # no_grad around the pass alone: a grad mode held across the yield would leak into the caller
                # (and two interleaved generators would restore each other's mode in the wrong order)
                with torch.no_grad(), torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                                     enabled=amp_dtype is not None):
                    captured[name] = cap(prep(images.to(dev, non_blocking=True)))
            out = {}
            for name, model in models.items():          # in the order given; shared captures reused
                feats, keep = captured[first[id(model)]], set(wanted[name])
                out[name] = OrderedDict((layer, f) for layer, f in feats.items() if layer in keep)
            yield out, labels


def features(model: torch.nn.Module, batches: Iterable, layers: str | Sequence[str] = "default", *,
             device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None,
             progress: str | None = None) -> Iterator[tuple[OrderedDict, torch.Tensor]]:
    """:func:`forward_passes` for one model: yields ``({layer: feature}, labels)`` per minibatch."""
    for out, labels in forward_passes({"model": model}, batches, {"model": layers}, device=device,
                                      amp_dtype=amp_dtype, progress=progress):
        yield out["model"], labels


def mean_over_images(model: torch.nn.Module, batches: Iterable, layers: str | Sequence[str],
                     per_image: Callable[[OrderedDict], torch.Tensor],
                     device: str | torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Average of ``per_image(features)`` (a ``(B, ...)`` tensor for each minibatch) over all images of
    ``batches``. Values are summed and divided once at the end, so minibatches of any size average correctly;
    under ``torch.distributed`` the sums are all-reduced. Returns ``(mean on the CPU, number of images)``."""
    total, count = None, 0
    for feats, _ in features(model, batches, layers, device=device):
        values = per_image(feats)
        total = values.sum(0) if total is None else total + values.sum(0)
        count += values.shape[0]
    if total is None:
        raise ValueError("no batches were given")
    total, count = all_reduce_sum([total, torch.tensor(float(count), device=total.device)])
    return (total / count).cpu(), int(count.item())


def _device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")

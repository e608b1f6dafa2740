"""The one forward loop. Every measurement that runs a model without gradients (:mod:`vitcnn_utils.measure`, and
through it the CKA heatmaps command) goes through :func:`forward_passes`, which owns:

* the device: a model is moved to ``device`` when one is given, else it stays where it is; each minibatch
  goes to its model's device;
* preprocessing: raw ``uint8`` (or float [0, 1]) images through :func:`vitcnn_utils.data.preprocessor`;
* capture: one :class:`~vitcnn_utils.hooks.Capture` per model *object* (a model under several names runs once
  per minibatch, capturing the union of its names' layers), with an optional per-layer ``transform`` applied
  inside the hook (e.g. reducing features to Gram matrices);
* eval mode, ``torch.no_grad()`` around each pass (never held across a ``yield``, so the caller's grad mode
  is untouched) and optional autocast (``amp_dtype``); each module's training flag is restored when the loop
  ends, also on error or when the generator is closed (:func:`preserved_state`);
* progress: a tqdm bar when ``progress`` names it (``TQDM_DISABLE=1`` is honoured).

Batches are ``(images, labels)`` pairs (tuples or lists; labels may be None); anything else is a clear error.

Distributed sharding is the batches' business (:func:`vitcnn_utils.data.analysis_batches` with ``shard=``);
sums over images are all-reduced by the measurement that owns them (:func:`mean_over_images` here).
"""
from __future__ import annotations

import itertools
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import torch
from tqdm.auto import tqdm

from .data import preprocessor
from .distributed import all_reduce_sum
from .hooks import Capture, resolve_layers

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # command-line names of amp_dtype


# model -> the snapshots of its open preserved_states, oldest first. A state restores its snapshot when it is the
# newest open one; one that exits earlier (two interleaved loops over one model) hands its older snapshot to the
# next newer one instead, so the loop still running keeps its eval mode and the last exit restores the original.
_PRESERVED: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()


def _snapshot(model: torch.nn.Module) -> tuple:
    return ([(m, m.training) for m in model.modules()],
            [(p, p.requires_grad, p.grad) for p in model.parameters()])


def _restore(snapshot: tuple) -> None:
    modes, params = snapshot
    for module, training in modes:
        module.training = training
    for param, requires_grad, grad in params:
        param.requires_grad_(requires_grad)
        if param.grad is not grad:                         # model.to() moves .grad: keep the content
            param.grad = None if grad is None else grad.to(device=param.device, dtype=param.dtype)


@contextmanager
def preserved_state(*models: torch.nn.Module):
    """Context manager that restores, on exit and whatever happens inside, every module's training flag
    (module by module) and every parameter's ``requires_grad`` and ``.grad`` of ``models``. A measurement may
    switch to ``eval()``, freeze parameters or run a backward pass without leaving the caller's model
    modified. Nested uses restore in turn; of interleaved uses on one model (two loops), the last to exit
    restores the state from before the first."""
    entered = []
    try:
        for model in dict.fromkeys(models):                       # each object once
            holder = [_snapshot(model)]
            _PRESERVED.setdefault(model, []).append(holder)
            entered.append((model, holder))
        yield
    finally:
        for model, holder in reversed(entered):
            stack = _PRESERVED[model]
            i = next(k for k, h in enumerate(stack) if h is holder)
            if i == len(stack) - 1:
                _restore(holder[0])
            else:
                stack[i + 1][0] = holder[0]                        # a newer one still runs: it restores this later
            del stack[i]
            if not stack:
                del _PRESERVED[model]


def minibatch_pair(batch) -> tuple:
    """``(images, labels)`` of one raw minibatch, checked: a clear error for anything that is not such a pair
    (e.g. a tensor of images passed as the batches)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1]
    got = (f"a {type(batch).__name__} of shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else
           f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, (tuple, list)) else
           f"a {type(batch).__name__}")
    raise TypeError(f"batches must be an iterable of (images, labels) pairs (labels may be None), e.g. "
                    f"[(images, labels)] or data.analysis_batches(...); one minibatch was {got}")


def _check_batches(batches) -> None:
    if isinstance(batches, torch.Tensor):
        raise TypeError(f"batches must be an iterable of (images, labels) pairs (labels may be None), not a tensor "
                        f"of shape {tuple(batches.shape)}: pass [(images, None)] or data.analysis_batches(...)")


def forward_passes(models: Mapping[str, torch.nn.Module], batches: Iterable,
                   layers: Mapping[str, str | Sequence[str]] | None = None, *,
                   device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None,
                   transform: Callable[[torch.Tensor], object] | None = None,
                   progress: str | None = None,
                   on_output: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None
                   ) -> Iterator[tuple[dict[str, OrderedDict], torch.Tensor]]:
    """Run every model on every raw ``(images, labels)`` minibatch of ``batches``.

    Args:
        models: ``{name: model}``; all see the same images.
        layers: ``{name: layers}`` for :class:`~vitcnn_utils.hooks.Capture` (missing names: ``"default"``).
        device: move the models there (default: leave each where it is).
        amp_dtype: autocast dtype for the forward passes (e.g. ``torch.bfloat16``); None = full precision.
        transform: applied to each captured feature inside its hook (see :class:`~vitcnn_utils.hooks.Capture`).
        progress: the progress bar's label; None = no bar.
        on_output: called as ``on_output(name, output, labels)`` with each named model's output (its logits) for
            every minibatch (a model under two names: its one output, for each name), e.g. to count correct
            predictions from the same pass.

    Yields:
        ``({name: {layer: feature}}, labels)`` per minibatch; each name's layers in execution order.
    """
    if not models:
        raise ValueError("no models given: pass {name: model}")
    layers = layers or {}
    unknown = [key for key in layers if key not in models]
    if unknown:
        raise ValueError(f"layers has key(s) {', '.join(map(repr, unknown))} naming no model; the models are: "
                         f"{', '.join(map(repr, models))} (the keys of layers must be model names)")
    _check_batches(batches)
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
            stack.enter_context(preserved_state(model))     # training flags restored however the loop ends
            if device is not None:
                model.to(device)
            model.eval()
            union = list(dict.fromkeys(layer for other, m in models.items() if m is model for layer in wanted[other]))
            cap = stack.enter_context(Capture(model, union, transform=transform))
            runs[name] = (cap, preprocessor(model), _device_of(model))
        for batch in tqdm(batches, desc=progress, total=total, leave=False, disable=_no_progress_bar(progress)):
            images, labels = minibatch_pair(batch)
            captured, outputs = {}, {}
            for name, (cap, prep, dev) in runs.items():
                # no_grad around the pass alone: a grad mode held across the yield would leak into the caller
                # (and two interleaved generators would restore each other's mode in the wrong order)
                with torch.no_grad(), torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                                     enabled=amp_dtype is not None):
                    captured[name] = cap(prep(images.to(dev, non_blocking=True)))
                outputs[name] = cap.output
            out = {}
            for name, model in models.items():          # in the order given; shared captures reused
                feats, keep = captured[first[id(model)]], set(wanted[name])
                out[name] = OrderedDict((layer, f) for layer, f in feats.items() if layer in keep)
                if on_output is not None:
                    on_output(name, outputs[first[id(model)]], labels)
            yield out, labels


def _no_progress_bar(progress: str | None) -> bool:
    """No bar without a label, or when ``TQDM_DISABLE`` is set (read now, not when tqdm was imported: an explicit
    ``disable`` argument overrides tqdm's own reading of it); ``TQDM_DISABLE`` of ``""``, ``0``, ``false`` or
    ``no`` leaves the bar on."""
    flag = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return progress is None or flag not in ("", "0", "false", "no")


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

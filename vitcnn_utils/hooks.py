"""Capture named intermediate representations of a model in one forward pass.

A *layer* (tap) is named after a module path of ``model.named_modules()``:

* ``"blocks.3.norm1"`` — the module's output;
* ``"blocks.3:in"`` — the module's first positional input (e.g. a residual block's identity path);
* ``"blocks.3.attn.probs"`` — for a timm ``Attention`` module: the attention probabilities
  ``(B, heads, N, N)`` (rows sum to 1). Fused attention never materialises them, so it is switched off on
  that module for the duration of the capture and restored afterwards.

Layers are chosen by exact name or ``fnmatch`` glob (``"blocks.*.attn.probs"``), or ``"default"`` for the
representations of the paper's CKA heatmaps (see :func:`default_layers`). Features come back in execution
order, as they were computed: a ViT's tokens stay ``(B, N, D)`` with the CLS token at index 0 (unlike timm's
``forward_intermediates``). Every captured tensor is detached (unless ``detach=False``) and *cloned*: timm
modules update activations in place (``x += shortcut``, in-place ReLU), which would otherwise overwrite what
was captured. Hooks are removed on exit, also on error; a requested layer that did not fire is an error.

Layer structure: :func:`block_outputs` and :func:`block_layers` name a network's block-level representations,
:func:`normalised_depth` and :func:`middle_index` place layers on a shared 0–1 depth axis.
"""
from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from timm.layers import Attention
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

PROBS = ".probs"
INPUT = ":in"


def attention_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Attention modules whose probabilities can be captured (timm ``Attention``), by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Attention)}


def available_layers(model: torch.nn.Module) -> list[str]:
    """Every layer name :class:`Capture` accepts for ``model`` (module outputs, ``:in`` inputs, and
    ``.probs`` attention probabilities), in module-registration order."""
    names = []
    attn = attention_modules(model)
    for name, _ in model.named_modules():
        if name:
            names += [name, name + INPUT] + ([name + PROBS] if name in attn else [])
    return names


def default_layers(model: torch.nn.Module) -> list[str]:
    """The representations in the CKA heatmaps, in execution order.

    * timm ``VisionTransformer``: the token embedding entering block 0 (``norm_pre``), then per block
      ``norm1``, ``attn`` (attention branch output), ``norm2``, ``mlp.act`` (MLP hidden activation),
      ``mlp`` (MLP branch output) and the block output: 6 per block.
    * timm ``ResNet``: the stem output (``maxpool``), then per residual unit the internal activations
      (bottleneck: ``act1``, ``act2``, ``bn3`` = residual branch before the addition; basic: ``act1``,
      ``bn2``) and the unit output.
    """
    if isinstance(model, VisionTransformer):
        names = ["norm_pre"]
        for i in range(len(model.blocks)):
            names += [f"blocks.{i}.{s}" for s in ("norm1", "attn", "norm2", "mlp.act", "mlp")] + [f"blocks.{i}"]
        return names
    if isinstance(model, ResNet):
        names = ["maxpool"]
        for name, module in model.named_modules():
            if isinstance(module, Bottleneck):
                names += [f"{name}.act1", f"{name}.act2", f"{name}.bn3", name]
            elif isinstance(module, BasicBlock):
                names += [f"{name}.act1", f"{name}.bn2", name]
        return names
    raise ValueError(f"no default layers for {type(model).__name__}: pass layer names or glob patterns "
                     "(see available_layers(model))")


def block_outputs(model: torch.nn.Module) -> list[str]:
    """The block-level representations (probes, data-scale CKA): a timm ViT's block outputs
    ``blocks.i``, a timm ResNet's residual unit outputs ``layerS.U``."""
    if isinstance(model, VisionTransformer):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    units = [name for name, m in model.named_modules() if isinstance(m, (Bottleneck, BasicBlock))]
    if not units:
        raise ValueError(f"no block outputs known for {type(model).__name__}: pass layer names "
                         "(see available_layers(model))")
    return units


def block_layers(model: torch.nn.Module, with_input: bool = True) -> list[str]:
    """The block-level layers of a timm ViT or ResNet, in depth order: optionally the representation that
    enters the first block ("layer 0": ``norm_pre`` = the ViT's token embedding, ``maxpool`` = the ResNet's
    stem output), then :func:`~vitcnn_utils.hooks.block_outputs` (``blocks.i`` / ``layerS.U``)."""
    blocks = block_outputs(model)
    if not with_input:
        return blocks
    return ["norm_pre" if isinstance(model, VisionTransformer) else "maxpool"] + blocks


def normalised_depth(n_layers: int) -> torch.Tensor:
    """Position of each of ``n_layers`` layers as a fraction of depth: ``i / (n - 1)`` (0 = first, 1 = last;
    a single layer sits at 0). float64 ``(n,)``."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1, got {n_layers}")
    return torch.arange(n_layers, dtype=torch.float64) / max(n_layers - 1, 1)


def middle_index(n_layers: int) -> int:
    """Index of the layer nearest normalised depth 0.5; of two equally near (an even count) the lower one.
    Exact integer arithmetic: ``(n - 1) // 2``."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1, got {n_layers}")
    return (n_layers - 1) // 2


def resolve_layers(model: torch.nn.Module, layers: str | Sequence[str] = "default") -> list[str]:
    """Expand ``"default"``, exact names and glob patterns into a list of layer names (no duplicates)."""
    if isinstance(layers, str):
        layers = [layers]
    available = available_layers(model)
    known = set(available)
    out: dict[str, None] = {}
    for pattern in layers:
        if pattern == "default":
            out.update(dict.fromkeys(default_layers(model)))
        elif pattern in known:
            out[pattern] = None
        else:
            matches = fnmatch.filter(available, pattern)
            if not matches:
                example = ", ".join(available[:6])
                raise ValueError(f"layer pattern {pattern!r} matches no layer of {type(model).__name__} "
                                 f"(names look like: {example}, ...; see available_layers(model))")
            out.update(dict.fromkeys(matches))
    return list(out)


class Capture:
    """Context manager that records the chosen layers at every forward pass of ``model``.

    Example::

        with Capture(vit, ["default", "blocks.*.attn.probs"]) as cap, torch.inference_mode():
            feats = cap(images)          # OrderedDict: name -> tensor, in execution order

    Args:
        model: any ``torch.nn.Module``; ``"default"`` layers are defined for timm ViTs and ResNets.
        layers: ``"default"``, or names / glob patterns (a string or a list of them).
        detach: detach captured tensors (default). ``detach=False`` keeps them in the autograd graph, e.g. to
            take gradients of a representation with respect to the input.
        transform: applied to each captured tensor inside the hook, its result stored instead of a copy of
            the tensor (which is then freed with the forward pass): e.g. :meth:`vitcnn_utils.cka.MinibatchCKA.
            gram` keeps an ``(n, n)`` Gram matrix per layer instead of ``(n, d)`` features, which bounds the
            memory of all-layer CKA on large models and batches. It must return new memory, not a view.
    """

    def __init__(self, model: torch.nn.Module, layers: str | Sequence[str] = "default", detach: bool = True,
                 transform=None):
        self.model, self.detach, self.transform = model, detach, transform
        self.layers = resolve_layers(model, layers)
        self.features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._handles: list = []
        self._fused: dict[torch.nn.Module, bool] = {}

    def _store(self, name: str, value) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"layer {name!r} produced a {type(value).__name__}, not a tensor: capture a "
                            "submodule that returns a tensor")
        if name in self.features:
            raise RuntimeError(f"layer {name!r} ran twice in one forward pass (a shared module): capture a "
                               "module that runs once, or call Capture once per pass")
        value = value.detach() if self.detach else value
        self.features[name] = self.transform(value) if self.transform else value.clone()

    def __enter__(self) -> "Capture":
        modules = dict(self.model.named_modules())
        attn = attention_modules(self.model)
        try:
            for name in self.layers:
                if name.endswith(PROBS):
                    module = attn[name[:-len(PROBS)]]
                    self._fused.setdefault(module, module.fused_attn)
                    module.fused_attn = False       # only the unfused path materialises probabilities
                    target, hook = module.attn_drop, self._output_hook(name)
                    self._handles.append(target.register_forward_hook(hook))
                elif name.endswith(INPUT):
                    target = modules[name[:-len(INPUT)]]
                    self._handles.append(target.register_forward_pre_hook(self._input_hook(name)))
                else:
                    self._handles.append(modules[name].register_forward_hook(self._output_hook(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, fused in self._fused.items():
            module.fused_attn = fused
        self._fused.clear()

    def _output_hook(self, name: str):
        return lambda module, args, output: self._store(name, output)

    def _input_hook(self, name: str):
        def hook(module, args):
            if not args:
                raise RuntimeError(f"layer {name!r}: the module was called with no positional input")
            self._store(name, args[0])
        return hook

    def __call__(self, *args, **kwargs) -> OrderedDict[str, torch.Tensor]:
        """Run ``model(*args, **kwargs)`` and return the captured features of this pass."""
        if not self._handles:
            raise RuntimeError("Capture is not active: use it as `with Capture(model, layers) as cap:`")
        self.features = OrderedDict()
        self.output = self.model(*args, **kwargs)
        missing = [name for name in self.layers if name not in self.features]
        if missing:
            raise RuntimeError(f"{len(missing)} requested layer(s) did not run in this forward pass: "
                               f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        return self.features


def capture(model: torch.nn.Module, x: torch.Tensor, layers: str | Sequence[str] = "default",
            detach: bool = True) -> OrderedDict[str, torch.Tensor]:
    """One forward pass of ``model`` on ``x``, returning the chosen layers (see :class:`Capture`)."""
    with Capture(model, layers, detach=detach) as cap:
        return cap(x)


def iter_features(model: torch.nn.Module, batches: Iterable, layers: str | Sequence[str] = "default",
                  device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None):
    """Yield ``(features, labels)`` for each raw ``(images, labels)`` batch of ``batches``: the model's
    :func:`~vitcnn_utils.models.preprocessor` is applied, ``model`` is put in eval mode (and on ``device``
    when given) and run under ``torch.inference_mode()``; ``amp_dtype`` (e.g. ``torch.bfloat16``) runs the
    forward pass under autocast."""
    from .models import preprocessor

    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    prep = preprocessor(model)
    model.eval()
    with Capture(model, layers) as cap, torch.inference_mode():
        for images, labels in batches:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                feats = cap(prep(images.to(device, non_blocking=True)))
            yield feats, labels


def mean_over_images(model: torch.nn.Module, batches: Iterable, layers: str | Sequence[str], per_image,
                     device: str | torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Average of ``per_image(features)`` (a ``(B, ...)`` tensor for each batch) over all images of
    ``batches``. Values are summed and divided once at the end, so batches of any size average correctly;
    under ``torch.distributed`` the sums are all-reduced. Returns ``(mean on the CPU, number of images)``."""
    from .distributed import all_reduce_sum

    total, count = None, 0
    for feats, _ in iter_features(model, batches, layers, device=device):
        values = per_image(feats)
        total = values.sum(0) if total is None else total + values.sum(0)
        count += values.shape[0]
    if total is None:
        raise ValueError("no batches were given")
    total, count = all_reduce_sum([total, torch.tensor(float(count), device=total.device)])
    return (total / count).cpu(), int(count.item())

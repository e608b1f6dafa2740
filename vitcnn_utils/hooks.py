"""Capture named intermediate representations of a model in one forward pass.

A *layer* (tap) is named after a module path of ``model.named_modules()``:

* ``"blocks.3.norm1"`` — the module's output;
* ``"blocks.3:in"`` — the module's first positional input (e.g. a residual block's identity path); ``":in"``
  alone is the model's own input (the preprocessed images);
* ``"blocks.3.attn.probs"`` — for a timm ``Attention`` module: the attention probabilities
  ``(B, heads, N, N)`` (rows sum to 1), taken before attention dropout (so also in train mode). Fused
  attention never materialises them, so it is switched off on that module while any capture of its
  probabilities is open and restored when the last one exits (in any order).

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
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch
from timm.layers import Attention
from timm.models.eva import EvaAttention
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

PROBS = ".probs"
INPUT = ":in"
GLOBAL_ATTENTION = (Attention, EvaAttention)    # attention modules whose probabilities Capture can record

# attention module -> [its fused_attn before the first open capture of its probabilities, open captures]: the
# original value is restored when the last of them exits, whatever the order in which they exit
_UNFUSED: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()


def attention_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Attention modules whose probabilities can be captured (timm ``Attention``, EVA's ``EvaAttention``: global
    attention whose unfused path materialises the softmax), by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GLOBAL_ATTENTION)}


def available_layers(model: torch.nn.Module) -> list[str]:
    """Every layer name :class:`Capture` accepts for ``model`` (``:in``, the model's input; module outputs, ``:in`` inputs, and
    ``.probs`` attention probabilities), in module-registration order."""
    names = [INPUT]                                          # the model's own input
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
    * any other timm model with ``feature_info`` (ConvNeXt, Swin, EfficientNet, RegNet, EVA, BEiT, MaxViT,
      ...): :func:`block_layers`, the representation entering the first block and every block output, found
      from timm's own stage metadata (see :func:`block_outputs`). Attention measurements (``.probs``, attention
      distance) are separate: they need global attention over a patch grid (:func:`global_attention_issue`).
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
    layer0, blocks = _timm_blocks(model)
    return [layer0] + blocks


_SEQUENTIAL = (torch.nn.Sequential, torch.nn.ModuleList)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _is_composite(module: torch.nn.Module) -> bool:
    return next(module.children(), None) is not None


def _feature_stages(model: torch.nn.Module) -> list[str]:
    """The stage modules named by timm's ``model.feature_info`` (the modules ``features_only`` /
    ``forward_intermediates`` tap), in depth order, with the stages feature_info skips filled in: feature_info
    lists only where the resolution changes (EfficientNet: ``blocks.0, 1, 2, 4, 6``), and the siblings between
    two listed stages of one ``Sequential``/``ModuleList`` container run between them, so they are stages too."""
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)                      # timm FeatureInfo object or its list of dicts
    if not isinstance(info, (list, tuple)):
        return []
    modules = dict(model.named_modules())
    names = list(dict.fromkeys(d["module"] for d in info if isinstance(d, dict) and d.get("module") in modules))
    stages = []
    for name, following in zip(names, names[1:] + [None]):
        stages.append(name)
        if following is None:
            continue
        parent, _, child = name.rpartition(".")
        parent_next, _, child_next = following.rpartition(".")
        container = modules[parent]
        if parent == parent_next and isinstance(container, _SEQUENTIAL):
            keys = list(container._modules)
            between = keys[keys.index(child) + 1:keys.index(child_next)]
            stages += [_join(parent, key) for key in between]
    return stages


def _stage_units(name: str, stage: torch.nn.Module) -> list[str]:
    """The blocks of one stage, in execution order: the children of its ``blocks`` container (ConvNeXt, Swin,
    MaxViT; the stage itself too when something runs after them, e.g. a stage norm), the children of a
    ``Sequential`` of blocks (EfficientNet), the children of a timm ``*Stage`` module made only of blocks of one
    class (RegNet's ``b1, b2, ...``), else the stage itself (a ViT block, a stem, an Inception module: its
    children are parallel branches, not a chain)."""
    blocks = stage._modules.get("blocks")
    if isinstance(blocks, _SEQUENTIAL) and len(blocks) and all(_is_composite(b) for b in blocks):
        units = [_join(name, f"blocks.{key}") for key in blocks._modules]
        keys = list(stage._modules)
        after = [stage._modules[k] for k in keys[keys.index("blocks") + 1:]]
        if any(m is not None and not isinstance(m, torch.nn.Identity) for m in after):
            units.append(name)
        return units
    children = list(stage.children())
    if (children and not isinstance(stage, torch.nn.ModuleDict) and all(_is_composite(c) for c in children)
            and (isinstance(stage, _SEQUENTIAL)
                 or (type(stage).__name__.endswith("Stage") and len({type(c) for c in children}) == 1))):
        return [_join(name, key) for key in stage._modules]
    return [name]


def _timm_blocks(model: torch.nn.Module) -> tuple[str, list[str]]:
    """``(layer 0, block outputs)`` of a timm model from its ``feature_info`` (see :func:`block_outputs`)."""
    modules = dict(model.named_modules())
    units = list(dict.fromkeys(unit for stage in _feature_stages(model)
                               for unit in _stage_units(stage, modules[stage])))
    if not units:
        raise ValueError(
            f"no default layers for {type(model).__name__}: default layers are defined for timm VisionTransformers "
            "and ResNets (per sublayer) and for timm models whose feature_info names their stage modules (block "
            "outputs), and this model's feature_info names none of its modules; pass layer names or glob patterns "
            "(see available_layers(model))")
    # is the first unit fed the image (a stem: RegNet's `stem`)? Only if no parameterised module precedes it
    first = units[0]
    before = []
    for path, module in model.named_modules():
        if path == first or path.startswith(first + "."):
            break
        if path and next(module.parameters(recurse=False), None) is not None:
            before.append(path)
    if not before:
        if len(units) == 1:
            raise ValueError(f"no default layers for {type(model).__name__}: its feature_info names a single "
                             f"module ({first!r}); pass layer names (see available_layers(model))")
        return first, units[1:]
    return first + INPUT, units


def block_outputs(model: torch.nn.Module) -> list[str]:
    """The block-level representations (probes, data-scale CKA), in execution order: a timm ViT's block outputs
    ``blocks.i``, a timm ResNet's residual unit outputs ``layerS.U``; for any other timm model, the block
    outputs of the stages that timm's ``model.feature_info`` names (the modules ``forward_intermediates``
    taps): ConvNeXt ``stages.S.blocks.B``, Swin ``layers.S.blocks.B`` (channels-last ``(B, H, W, C)``
    tensors), EfficientNet ``blocks.S.B``, RegNet ``sS.bB``, EVA ``blocks.i``."""
    return _layer0_and_blocks(model)[1]


def input_layer(model: torch.nn.Module) -> str:
    """"Layer 0", the representation entering the first block: ``norm_pre`` (a timm ViT's token embedding),
    ``maxpool`` (a timm ResNet's stem output); for other timm models the first block's input
    (``<first block>:in``), or the stem's output where feature_info starts at a stem fed the image (RegNet)."""
    return _layer0_and_blocks(model)[0]


def _layer0_and_blocks(model: torch.nn.Module) -> tuple[str, list[str]]:
    if isinstance(model, VisionTransformer):
        return "norm_pre", [f"blocks.{i}" for i in range(len(model.blocks))]
    units = [name for name, m in model.named_modules() if isinstance(m, (Bottleneck, BasicBlock))]
    if units:
        return ("maxpool" if hasattr(model, "maxpool") else units[0] + INPUT), units
    return _timm_blocks(model)


def block_layers(model: torch.nn.Module, with_input: bool = True) -> list[str]:
    """The block-level layers of a timm model, in depth order: optionally the representation that enters the
    first block ("layer 0", :func:`input_layer`: ``norm_pre`` = the ViT's token embedding, ``maxpool`` = the
    ResNet's stem output), then :func:`~vitcnn_utils.hooks.block_outputs` (``blocks.i`` / ``layerS.U``)."""
    blocks = block_outputs(model)
    if not with_input:
        return blocks
    return [input_layer(model)] + blocks


ATTENTION_MEASUREMENTS = ("attention probabilities (`.probs` layers) and mean attention distance "
                          "(measure.attention_distances, head_subset_cka, uniform_distance)")


def global_attention_issue(model: torch.nn.Module, need_grid: bool = True) -> str | None:
    """Why the attention measurements cannot run on ``model``, or ``None`` when they can.

    Attention probabilities need attention modules whose softmax :class:`Capture` can record (timm
    ``Attention`` as in ``VisionTransformer``/DeiT, ``EvaAttention`` as in EVA/EVA-02): global attention of
    every token over every token. Attention distance (``need_grid``) also needs the tokens on one patch grid
    (``patch_embed.grid_size`` and ``patch_size``): a plain ViT. Window attention (Swin) attends within local
    windows, so its probabilities are per window and no distance over the image is defined; convolutional
    networks have no attention. CKA (``Capture(model, "default")``, :func:`block_outputs`) works for all of them.
    """
    kind = type(model).__name__
    if attention_modules(model):
        embed = getattr(model, "patch_embed", None)
        if need_grid and not (hasattr(embed, "grid_size") and hasattr(embed, "patch_size")):
            return (f"{kind} has global attention but no patch_embed.grid_size / patch_size: attention distance "
                    "needs the tokens on a known patch grid, as in a plain ViT")
        return None
    others = sorted({type(m).__name__ for m in model.modules()
                     if "attention" in type(m).__name__.lower() or "attn" in type(m).__name__.lower()})
    windowed = sorted({type(m).__name__ for m in model.modules()
                       if hasattr(m, "window_size") and ("attention" in type(m).__name__.lower()
                                                         or "attn" in type(m).__name__.lower())})
    if windowed:
        return (f"{kind} attends within local windows ({', '.join(windowed)}), not globally over a token grid: "
                f"its attention probabilities are per window, so {ATTENTION_MEASUREMENTS} need a plain ViT with "
                "global attention (timm VisionTransformer / DeiT, or EVA); CKA with Capture(model, 'default') works")
    if others:
        return (f"{kind}'s attention modules ({', '.join(others)}) are not ones whose probabilities Capture can "
                f"record (timm Attention, EvaAttention): {ATTENTION_MEASUREMENTS} need a plain ViT with global "
                "attention (timm VisionTransformer / DeiT, or EVA); CKA with Capture(model, 'default') works")
    return (f"{kind} has no attention layers: {ATTENTION_MEASUREMENTS} need a plain ViT with global attention "
            "(timm VisionTransformer / DeiT, or EVA); CKA with Capture(model, 'default') works")


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
    if not layers:
        raise ValueError(f"no layers were requested for {type(model).__name__}: pass layer names or glob "
                         "patterns (see available_layers(model)), or 'default' for the paper's CKA layers")
    available = available_layers(model)
    known = set(available)
    out: dict[str, None] = {}
    for pattern in layers:
        if pattern == "default":
            names = default_layers(model)
            for name in names:
                if name not in known:
                    raise ValueError(_shared_module_message(model, name) or
                                     f"default layer {name!r} is not a layer of {type(model).__name__}: pass layer "
                                     "names or glob patterns (see available_layers(model))")
            out.update(dict.fromkeys(names))
        elif pattern in known:
            out[pattern] = None
        else:
            matches = fnmatch.filter(available, pattern)
            shared = _shared_module_message(model, pattern) if not matches else None
            if shared:
                raise ValueError(shared)
            if not matches:
                example = ", ".join(available[:6])
                hint = (global_attention_issue(model, need_grid=False) or "") if PROBS in pattern else ""
                raise ValueError(f"layer pattern {pattern!r} matches no layer of {type(model).__name__} "
                                 f"(names look like: {example}, ...; see available_layers(model))"
                                 + (f": {hint}" if hint else ""))
            out.update(dict.fromkeys(matches))
    return list(out)


def _module_path(layer: str) -> str:
    """The module path of a layer name (``.probs`` and ``:in`` stripped)."""
    for suffix in (PROBS, INPUT):
        if layer.endswith(suffix):
            return layer[:-len(suffix)]
    return layer


def _shared_module_message(model: torch.nn.Module, layer: str) -> str | None:
    """Why ``layer`` is missing from ``available_layers(model)`` when its module is one object registered under
    two names (``blocks[1] = blocks[0]``): ``named_modules`` lists it once, under its first name. None otherwise."""
    first: dict[int, str] = {}
    alias: dict[str, str] = {}                           # a second name -> the first name of the same object
    for name, module in model.named_modules(remove_duplicate=False):
        first.setdefault(id(module), name)
        if first[id(module)] != name:
            alias[name] = first[id(module)]
    path = _module_path(layer)
    if path not in alias:
        return None
    parts = path.split(".")
    top = next(".".join(parts[:k]) for k in range(1, len(parts) + 1) if ".".join(parts[:k]) in alias)
    return (f"layer {layer!r} is the same module as {alias[path] + layer[len(path):]!r}: {top!r} and {alias[top]!r} "
            f"are one module object under two names, whose uses hooks cannot tell apart; give each its own module "
            f"(e.g. model.{top} = copy.deepcopy(model.{alias[top]})) to capture it")


class Capture:
    """Context manager that records the chosen layers of ``model`` at every call ``cap(inputs)``.

    Only the forward passes a capture runs itself are recorded, so several captures may be open on one model
    at once (e.g. the same model compared with itself): each sees only its own passes.

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
            memory of all-layer CKA on large models and batches. A result that shares memory with the
            captured tensor (a view such as ``t.flatten(1)``, or ``t`` itself) is copied, since the model may
            later update that tensor in place.
    """

    def __init__(self, model: torch.nn.Module, layers: str | Sequence[str] = "default", detach: bool = True,
                 transform=None):
        self.model, self.detach, self.transform = model, detach, transform
        self.layers = resolve_layers(model, layers)
        self.features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._handles: list = []
        self._unfused: list[torch.nn.Module] = []      # attention modules this capture switched to unfused
        self._active = self._running = False

    def _store(self, name: str, value) -> None:
        if not self._running:                        # another capture's (or a plain) forward pass of the model
            return
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"layer {name!r} produced a {type(value).__name__}, not a tensor: capture a "
                            "submodule that returns a tensor")
        if name in self.features:
            raise RuntimeError(f"layer {name!r} ran twice in one forward pass (a shared module): capture a "
                               "module that runs once, or call Capture once per pass")
        value = value.detach() if self.detach else value
        if self.transform is None:
            self.features[name] = value.clone()
            return
        out = self.transform(value)
        if isinstance(out, torch.Tensor) and _shares_memory(out, value):
            out = out.clone()          # a view of the module's output: timm's in-place ops would overwrite it
        self.features[name] = out

    def __enter__(self) -> "Capture":
        modules = dict(self.model.named_modules())
        attn = attention_modules(self.model)
        try:
            for name in self.layers:
                if name.endswith(PROBS):
                    module = attn[name[:-len(PROBS)]]
                    if module not in self._unfused:
                        state = _UNFUSED.setdefault(module, [module.fused_attn, 0])
                        state[1] += 1
                        self._unfused.append(module)
                    module.fused_attn = False       # only the unfused path materialises probabilities
                    # the softmax output is attn_drop's input: taken before dropout, rows sum to 1 in train mode too
                    self._handles.append(module.attn_drop.register_forward_pre_hook(self._input_hook(name)))
                elif name.endswith(INPUT):
                    target = modules[name[:-len(INPUT)]]
                    self._handles.append(target.register_forward_pre_hook(self._input_hook(name)))
                else:
                    self._handles.append(modules[name].register_forward_hook(self._output_hook(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._active = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self._unfused:
            state = _UNFUSED[module]
            state[1] -= 1
            if state[1] == 0:                        # the last open capture of this module's probabilities
                module.fused_attn = state[0]
                del _UNFUSED[module]
        self._unfused.clear()

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
        if not self._active:
            raise RuntimeError("Capture is not active: use it as `with Capture(model, layers) as cap:`")
        self.features = OrderedDict()
        self._running = True
        try:
            self.output = self.model(*args, **kwargs)
        finally:
            self._running = False
        missing = [name for name in self.layers if name not in self.features]
        if missing:
            raise RuntimeError(f"{len(missing)} requested layer(s) did not run in this forward pass: "
                               f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        return self.features


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share storage (one is a view of the other, or the same tensor)."""
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() > 0
    except (RuntimeError, NotImplementedError):      # tensors without a storage (sparse, nested, ...)
        return False


def capture(model: torch.nn.Module, x: torch.Tensor, layers: str | Sequence[str] = "default",
            detach: bool = True) -> OrderedDict[str, torch.Tensor]:
    """One forward pass of ``model`` on ``x``, returning the chosen layers (see :class:`Capture`)."""
    with Capture(model, layers, detach=detach) as cap:
        return cap(x)

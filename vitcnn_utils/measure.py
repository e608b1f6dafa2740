"""Measurements over models: each runs models on raw minibatches through the one forward loop
(:func:`vitcnn_utils.runner.forward_passes`) and hands the captured tensors to the maths modules
(:mod:`~vitcnn_utils.cka`, :mod:`~vitcnn_utils.attention`, :mod:`~vitcnn_utils.localisation`,
:mod:`~vitcnn_utils.probes`, :mod:`~vitcnn_utils.skips`), which know nothing of models.

* CKA heatmaps (paper Figs 1–2, 7–8, 12): :func:`model_heatmaps`, :func:`block_heatmaps`;
* attention distances and head subsets (Figs 3–5): :func:`attention_distances`, :func:`uniform_distance`,
  :func:`head_subset_cka`;
* spatial information (Figs 6, 9–10): :func:`token_geometry`, :func:`token_patch_cka`,
  :func:`effective_receptive_field`;
* skip connections (Fig 7): :func:`vit_skip_ratios`, :func:`resnet_skip_ratios`;
* linear probes (Figs 11, 13): :func:`probe_layers`, :func:`spatial_probes`, :func:`block_probes`.

Batches are iterables of raw ``(images, labels)`` minibatches (e.g. :func:`vitcnn_utils.data.analysis_batches`),
at least 4 images each where CKA is computed.
"""
from __future__ import annotations

import numbers
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from .architectures import removed_blocks
from .attention import _grid, attention_distance_per_image, patch_distances
from .cka import Heatmaps, MinibatchCKA
from .data import preprocessor
from .distributed import all_reduce_sum
from .hooks import INPUT, Capture, block_layers, block_outputs, global_attention_issue, resolve_layers
from .localisation import _patch_side, grid_tokens, image_patches, infer_grid
from .skips import norm_ratio
from .probes import AGGREGATIONS, ProbeResult, RidgeProbes, aggregate
from .runner import features, forward_passes, mean_over_images, minibatch_pair, preserved_state


def model_heatmaps(models: Mapping[str, torch.nn.Module], batches, layers: Mapping[str, object] | None = None,
                   device: str | torch.device = "cpu", gram_dtype: torch.dtype = torch.float64,
                   amp_dtype: torch.dtype | None = None, progress: bool = True) -> Heatmaps:
    """CKA between every captured layer of every model (within and across), over all ``batches``.

    Args:
        models: ``{name: model}``; every model sees the same images.
        batches: iterable of ``(raw images, labels)`` minibatches (at least 4 images each), e.g.
            :func:`vitcnn_utils.data.analysis_batches`; each model applies its own
            :func:`~vitcnn_utils.data.preprocessor`.
        layers: ``{name: layers}`` for :class:`~vitcnn_utils.hooks.Capture` (default: ``"default"``).
            One model object under several names (a within-model heatmap, ``{"a": m, "b": m}``) runs once
            per minibatch, with one capture of all its names' layers shared by them.
        gram_dtype: precision of the Gram products ``x @ xᵀ`` (:class:`~vitcnn_utils.cka.MinibatchCKA`):
            ``torch.float64`` or ``torch.float32`` (or ``"float64"`` / ``"float32"``); every other function here
            that takes it passes it on the same way.
        amp_dtype: optional autocast dtype for the forward passes (Grams stay in ``gram_dtype``).

    Returns:
        :class:`Heatmaps`; each layer's Gram matrix is computed once per minibatch for all heatmaps.
    """
    cka, names = model_cka(models, batches, layers, device, gram_dtype, amp_dtype, progress)
    return Heatmaps(names, cka.compute(), cka.total_examples)


def heatmaps_with_accuracy(models: Mapping[str, torch.nn.Module], batches,
                           layers: Mapping[str, object] | None = None, device: str | torch.device = "cpu",
                           gram_dtype: torch.dtype = torch.float64, progress: bool = True
                           ) -> tuple[Heatmaps, dict[str, float]]:
    """:func:`model_heatmaps` and every model's top-1 accuracy (a fraction) on the same ``batches``, from one
    forward pass per model and minibatch: ``(heatmaps, {name: accuracy})``. The heatmaps are the bits of
    :func:`model_heatmaps`; the accuracies are those of :func:`vitcnn_utils.train.model_accuracies` (the argmax of
    the same logits against the labels, counts all-reduced), without its second pass over the images."""
    correct: dict[str, int] = {}
    seen: dict[str, int] = {}

    def count(name: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        correct[name] = correct.get(name, 0) + (logits.argmax(-1).cpu() == labels).sum().item()
        seen[name] = seen.get(name, 0) + labels.shape[0]
    cka, names = model_cka(models, batches, layers, device, gram_dtype, None, progress, on_output=count)
    accuracies = {}
    for name in models:
        c, n = all_reduce_sum([torch.tensor(float(correct[name])), torch.tensor(float(seen[name]))])
        accuracies[name] = c.item() / n.item()
    return Heatmaps(names, cka.compute(), cka.total_examples), accuracies


def model_cka(models: Mapping[str, torch.nn.Module], batches, layers: Mapping[str, object] | None = None,
              device: str | torch.device = "cpu", gram_dtype: torch.dtype = torch.float64,
              amp_dtype: torch.dtype | None = None, progress: bool = True,
              on_output: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None
              ) -> tuple[MinibatchCKA, dict[str, list[str]]]:
    """The accumulation behind :func:`model_heatmaps` (same arguments): ``(cka, names)``, the filled
    :class:`~vitcnn_utils.cka.MinibatchCKA` over the layers ``"<model>/<layer>"`` and ``{model: layers}`` in
    execution order, for callers that want more than the heatmap (e.g. ``cka.interval()``). ``on_output``: see
    :func:`~vitcnn_utils.runner.forward_passes`."""
    device = torch.device(device)
    cka = MinibatchCKA(gram_dtype=gram_dtype, device=device)
    names: dict[str, list[str]] = {}
    # each layer is reduced to its (n, n) Gram inside the hook: memory ~ L n², not the features
    for captured, _ in forward_passes(models, batches, layers, device=device, amp_dtype=amp_dtype,
                                      transform=cka.gram, progress="CKA" if progress else None, on_output=on_output):
        cka.update(_joint(captured, names))
    return cka, names


def _joint(captured: Mapping[str, Mapping[str, object]], names: dict[str, list[str]]) -> dict[str, object]:
    """One minibatch's ``{"<model>/<layer>": Gram}`` for :meth:`MinibatchCKA.update`, every model's layers in
    the order of its first minibatch (recorded in ``names``, execution order). The one place these keys and
    this order are made, so :func:`model_cka` and :func:`heatmaps_from_grams` feed the same updates."""
    joint = {}
    for name, feats in captured.items():
        names.setdefault(name, list(feats))                     # execution order
        joint.update({f"{name}/{layer}": feats[layer] for layer in names[name]})
    return joint


def model_grams(model: torch.nn.Module, batches, layers: object = "default", device: str | torch.device = "cpu",
                gram_dtype: torch.dtype = torch.float64, amp_dtype: torch.dtype | None = None,
                progress: bool = False) -> list[OrderedDict]:
    """One model's per-minibatch Gram matrices: ``[{layer: cka.Gram}]``, one dict per minibatch of ``batches``
    (layers in execution order), computed in the forward hooks of :func:`~vitcnn_utils.runner.forward_passes`
    exactly as :func:`model_cka` computes them (same ``device``, ``gram_dtype`` and ``amp_dtype`` give the same
    bits). For :func:`heatmaps_from_grams`, so a model's Grams can be computed once and shared by several
    heatmaps over the same images. Memory: ``layers × minibatches × n² × 8`` bytes (n = minibatch size)."""
    cka = MinibatchCKA(gram_dtype=gram_dtype, device=torch.device(device))
    return [captured["model"] for captured, _ in
            forward_passes({"model": model}, batches, {"model": layers}, device=torch.device(device),
                           amp_dtype=amp_dtype, transform=cka.gram, progress="Grams" if progress else None)]


def block_grams(model: torch.nn.Module, batches, with_input: bool = True, device: str | torch.device = "cpu",
                gram_dtype: torch.dtype = torch.float64, progress: bool = False) -> list[OrderedDict]:
    """:func:`model_grams` of the model's :func:`~vitcnn_utils.hooks.block_layers`, the layers of
    :func:`block_heatmaps`."""
    return model_grams(model, batches, block_layers(model, with_input), device=device, gram_dtype=gram_dtype,
                       progress=progress)


def heatmaps_from_grams(grams: Mapping[str, Sequence[Mapping[str, object]]], device: str | torch.device = "cpu",
                        gram_dtype: torch.dtype = torch.float64) -> Heatmaps:
    """The :class:`Heatmaps` of :func:`model_heatmaps` from Grams already computed: ``grams`` is ``{label:
    per-minibatch Grams}`` (each from :func:`model_grams` over the same batches, in the same order). The
    :meth:`MinibatchCKA.update` calls, their order and their keys (``"<label>/<layer>"``) are those of
    :func:`model_cka`, so with the same ``device`` and ``gram_dtype`` the heatmaps are the same bits as
    :func:`model_heatmaps` on these models and batches. The Grams are read, never modified."""
    if not grams:
        raise ValueError("no models given: pass {label: per-minibatch Grams}")
    counts = {label: len(per) for label, per in grams.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every model must have the Grams of the same minibatches; minibatches per model: {counts}")
    device = torch.device(device)
    cka = MinibatchCKA(gram_dtype=gram_dtype, device=device)
    names: dict[str, list[str]] = {}
    for i in range(next(iter(counts.values()))):
        cka.update(_joint({label: per[i] for label, per in grams.items()}, names))
    return Heatmaps(names, cka.compute(), cka.total_examples)


def block_heatmaps(models: Mapping[str, torch.nn.Module], batches, with_input: bool = True,
                   device: str | torch.device = "cpu", progress: bool = True,
                   gram_dtype: torch.dtype = torch.float64) -> Heatmaps:
    """:func:`model_heatmaps` restricted to each model's :func:`~vitcnn_utils.hooks.block_layers` (layer 0 =
    embedding / stem when ``with_input``, then the block outputs): ``heatmaps[a, b]`` is ``(blocks of a, blocks
    of b)``."""
    layers = {label: block_layers(model, with_input) for label, model in models.items()}
    return model_heatmaps(models, batches, layers, device=device, gram_dtype=gram_dtype, progress=progress)


def attention_distances(model: torch.nn.Module, batches: Iterable, renormalize: bool = True,
                        device: str | torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Mean attention distance of every head of every block of a timm ViT, over all images of ``batches``
    (raw ``(images, labels)`` minibatches; the model's :func:`~vitcnn_utils.data.preprocessor` is applied).

    Returns:
        ``(distances, n_images)`` with distances float64 ``(blocks, heads)`` in pixels. The per-image values
        are summed and divided once at the end, so batches of any sizes average correctly; under
        ``torch.distributed`` the sums are all-reduced.

    Distances are per axis for non-square patches (``patch_size=(ph, pw)``: rows ``ph`` pixels apart, columns
    ``pw``). The patch grid is ``patch_embed.grid_size``, or, for a ``dynamic_img_size`` ViT, the grid of the
    images each minibatch holds.
    """
    _require_global_attention(model)
    probs = resolve_layers(model, "blocks.*.attn.probs")
    embed, prefix = model.patch_embed, model.num_prefix_tokens
    dynamic = getattr(model, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size")
    layers = probs + ([INPUT] if dynamic else [])                          # the image size sets a dynamic grid

    def per_image(feats):                                                   # (B, blocks, heads)
        grid = tuple(embed.dynamic_feat_size(tuple(feats[INPUT].shape[-2:])) if dynamic else embed.grid_size)
        tokens = feats[probs[0]].shape[-1]
        if tokens != prefix + grid[0] * grid[1]:
            size = "×".join(map(str, feats[INPUT].shape[-2:])) if dynamic else "these"
            raise ValueError(f"{type(model).__name__} attends over {tokens} tokens for {size} images, but its patch "
                             f"grid {grid[0]}×{grid[1]} (patch_embed) and {prefix} prefix token(s) make "
                             f"{prefix + grid[0] * grid[1]}: pass images of the size the model was built for "
                             f"({'×'.join(map(str, getattr(embed, 'img_size', None) or ('?', '?')))})")
        return torch.stack([attention_distance_per_image(feats[name], embed.patch_size, grid, prefix, renormalize)
                            for name in probs], dim=1)
    return mean_over_images(model, batches, layers, per_image, device=device)


def head_subset_cka(vit: torch.nn.Module, other: torch.nn.Module, batches, other_layers, block: int = 0,
                    subset_size: int = 1, device: str | torch.device = "cpu",
                    gram_dtype: torch.dtype = torch.float64) -> dict:
    """CKA between subsets of one ViT block's attention heads and layers of another model (paper Fig 5).

    The heads of ``block`` are sorted by mean attention distance (over the same ``batches``); each subset is
    a window of ``subset_size`` consecutive heads in that order, from the most local to the most global. A
    subset's representation is the concatenation of its heads' outputs (the input of ``attn.proj``) at the
    patch tokens (prefix tokens dropped), compared by minibatch CKA with each of ``other_layers``.

    Returns:
        ``{"heads": [[head indices], ...], "distance": float64 (subsets,) mean distance of each subset in
        pixels, "cka": float64 (subsets, len(other_layers)), "layers": other_layers}``.
    """
    _require_global_attention(vit)
    n_blocks = len(getattr(vit, "blocks", ()))
    if isinstance(block, bool) or not isinstance(block, numbers.Integral) or not 0 <= block < n_blocks:
        raise ValueError(f"block must be a block index of this {n_blocks}-block {type(vit).__name__}, between 0 "
                         f"and {n_blocks - 1}, got {block!r}")
    distances, _ = attention_distances(vit, batches, device=device)
    per_head = distances[block]
    heads = len(per_head)
    if not 1 <= subset_size <= heads:
        raise ValueError(f"subset_size must be in [1, {heads}], got {subset_size}")
    order = torch.argsort(per_head).tolist()
    subsets = [order[i:i + subset_size] for i in range(heads - subset_size + 1)]
    tap = f"blocks.{block}.attn.proj:in"
    other_layers = resolve_layers(other, other_layers)
    cka = MinibatchCKA(gram_dtype=gram_dtype, device=device)
    for captured, _ in forward_passes({"vit": vit, "other": other}, batches, {"vit": tap, "other": other_layers},
                                      device=device):
        out = captured["vit"][tap][:, vit.num_prefix_tokens:]                      # (B, P, heads·head_dim)
        out = out.unflatten(-1, (heads, -1))                                        # (B, P, heads, head_dim)
        cka.update([out[:, :, s] for s in subsets], [captured["other"][name] for name in other_layers])
    return {"heads": subsets, "distance": torch.stack([per_head[s].mean() for s in subsets]),
            "cka": cka.compute(), "layers": other_layers}


def _require_global_attention(model: torch.nn.Module) -> None:
    """Attention distance needs global attention over a patch grid (a timm ViT, DeiT or EVA): a clear error
    for Swin (window attention), ConvNeXt, ResNets and other models (see hooks.global_attention_issue)."""
    problem = global_attention_issue(model)
    if problem:
        raise ValueError(f"attention distance is not defined for this model: {problem}")


def uniform_distance(model: torch.nn.Module) -> float:
    """Mean attention distance (pixels) of a head attending uniformly to all patches of ``model``'s grid
    (``patch_embed.grid_size``; per axis for non-square patches)."""
    _require_global_attention(model)
    return patch_distances(tuple(model.patch_embed.grid_size), model.patch_embed.patch_size).mean().item()


def token_patch_cka(model: torch.nn.Module, batches: Iterable, layer: str, patch_size: int,
                    grid: tuple[int, int], num_prefix_tokens: int = 0,
                    device: str | torch.device = "cpu", gram_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """CKA between every grid token of ``layer`` and every input patch.

    Args:
        model, layer: the network and the captured layer (e.g. ``"blocks.5"`` or ``"layer4.0"``).
        batches: raw ``(images, labels)`` minibatches; the model's preprocessing is applied, and the patches
            are taken from the preprocessed input the model sees.
        patch_size, grid: the input patch side (pixels) and the ``(gh, gw)`` grid of the layer.

    Returns:
        float64 ``(gh·gw tokens, gh·gw positions)``.
    """
    patch_size, grid = _patch_side(patch_size), _grid(grid)
    cka = MinibatchCKA(gram_dtype=gram_dtype, device=device)
    for feats, _ in features(model, batches, [INPUT, layer], device=device):     # INPUT: the images the model saw
        tokens = grid_tokens(feats[layer], grid, num_prefix_tokens)
        cka.update(list(tokens.unbind(1)), list(image_patches(feats[INPUT], patch_size).unbind(1)))
    return cka.compute()


def effective_receptive_field(model: torch.nn.Module, images: torch.Tensor, layer: str,
                              grid: tuple[int, int] | None = None, num_prefix_tokens: int | None = None,
                              device: str | torch.device = "cpu") -> torch.Tensor:
    """Effective receptive field of the centre position of ``layer`` (paper Fig 6).

    For each image, the gradient of the centre token's channels, summed, with respect to the input:
    ``|∂ Σ_c f_c(centre) / ∂x|``, summed over input channels, averaged over the images, and normalised to
    a maximum of 1. ``grid`` (the layer's ``(gh, gw)``) and ``num_prefix_tokens`` are inferred from the
    features and the model when not given. Returns float64 ``(H, W)``.

    The one measurement with a backward pass, so it captures directly rather than through the (gradient-free)
    :func:`~vitcnn_utils.runner.forward_passes`. The model is left as it was: training flags, parameters'
    ``requires_grad`` and ``.grad`` are restored (:func:`~vitcnn_utils.runner.preserved_state`); only the
    input's gradient is computed.
    """
    if num_prefix_tokens is None:
        num_prefix_tokens = getattr(model, "num_prefix_tokens", 0)
    if grid is not None:
        grid = _grid(grid)
    with preserved_state(model):
        model.eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)                     # no parameter gradients: the input's alone is wanted
        x = preprocessor(model)(images.to(device)).detach().requires_grad_(True)
        with Capture(model, layer, detach=False) as cap, torch.enable_grad():
            out = cap(x)[layer]
            gh, gw = grid or infer_grid(out, num_prefix_tokens)
            tokens = grid_tokens(out, (gh, gw), num_prefix_tokens)
            (grad,) = torch.autograd.grad(tokens[:, (gh // 2) * gw + gw // 2].sum(), x)
    erf = grad.abs().sum(1).mean(0).double()
    peak = erf.max()
    if peak == 0:
        raise ValueError(f"the centre of {layer!r} does not depend on the input (zero gradient)")
    return (erf / peak).cpu()


def token_geometry(model: torch.nn.Module, layer: str, batches: Iterable,
                   device: str | torch.device = "cpu") -> dict:
    """How ``layer``'s tokens sit on the input: ``{"patch_size": P (pixels), "grid": (gh, gw),
    "num_prefix_tokens": k}``, the arguments :func:`token_patch_cka` needs.

    A ViT (a model with ``patch_embed``) gives its patch size, patch grid and prefix (CLS/register) tokens.
    For a CNN one image of ``batches`` is run to read the ``(gh, gw)`` size of ``layer``'s map; its
    "tokens" are the channel vectors at each position and each covers a ``P × P`` input patch with
    ``P = H / gh = W / gw`` (the map must tile the input exactly, else ``ValueError``).
    """
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        ph, pw = (embed.patch_size, embed.patch_size) if isinstance(embed.patch_size, int) else embed.patch_size
        if ph != pw:
            raise ValueError(f"non-square patches {ph}×{pw} are not supported")
        return {"patch_size": int(ph), "grid": tuple(int(g) for g in embed.grid_size),
                "num_prefix_tokens": int(getattr(model, "num_prefix_tokens", 0))}
    images, labels = minibatch_pair(next(iter(batches)))
    fmap = next(features(model, [(images[:1], labels[:1])], layer, device=device))[0][layer]
    if fmap.ndim != 4:
        raise ValueError(f"{layer!r} gives {tuple(fmap.shape)}, not a (B, C, H, W) map; for token models "
                         "pass a model with patch_embed")
    (h, w), (gh, gw) = images.shape[-2:], fmap.shape[-2:]     # preprocessing keeps the image size
    if h % gh or w % gw or h // gh != w // gw:
        raise ValueError(f"the {gh}×{gw} map of {layer!r} does not tile the {h}×{w} input in square patches")
    return {"patch_size": h // gh, "grid": (int(gh), int(gw)), "num_prefix_tokens": 0}


def probe_layers(model: torch.nn.Module, layers: Sequence[str], fit: Iterable, val: Iterable, test: Iterable,
                 num_classes: int, aggregations: Sequence[str] = AGGREGATIONS, pool_grid=None,
                 device: str | torch.device = "cpu", progress: bool = True) -> ProbeResult:
    """Fit and score probes on ``layers`` of ``model`` for every aggregation.

    Args:
        fit, val, test: raw ``(images, labels)`` minibatches (the model's preprocessing is applied): the
            probes' training images, the held-out training images that choose λ, and the test images.
        num_classes: number of classes ``C``.
        pool_grid: CNN maps are average-pooled to this ``(h, w)`` (default: the smallest map among
            ``layers``, i.e. the last stage's size).
        aggregations: see :func:`vitcnn_utils.probes.aggregate`; ``"first"`` is skipped for CNN maps, and is
            an error for a token model without a class token (a GAP ViT, with or without register tokens).

    Memory: per-token probes keep ``2 · tokens · (d+1)²`` float64 sums per layer (ViT-B/16: ~1.9 GB a
    layer); probe aggregates only for large models.
    """
    num_prefix = getattr(model, "num_prefix_tokens", 0)
    class_token = has_class_token(model)
    probes = RidgeProbes(num_classes, device=device)
    counts = {}

    def sites(feats):
        nonlocal pool_grid
        if pool_grid is None:
            maps = [f.shape[-2:] for f in feats.values() if f.ndim == 4]
            pool_grid = tuple(min(maps)) if maps else None
        out = OrderedDict()
        for layer in layers:
            f = feats[layer]
            aggs = [a for a in aggregations if not (a == "first" and f.ndim == 4)]
            for agg, x in aggregate(f, num_prefix, pool_grid, aggs, class_token=class_token).items():
                out[f"{layer}/{agg}"] = x
        return out

    for split, batches in (("fit", fit), ("val", val), ("test", test)):
        if split == "test":
            probes.solve()
        n = 0
        for feats, labels in features(model, batches, list(layers), device=device,
                                      progress=f"probes: {split}" if progress else None):
            x = sites(feats)
            probes.score(x, labels) if split == "test" else probes.update(split, x, labels)
            n += labels.shape[0]
        counts[split] = int(all_reduce_sum([torch.tensor(float(n))])[0].item())
    accs = probes.accuracy()
    accuracy, lambdas = {}, {}
    for agg in aggregations:
        keys = [f"{layer}/{agg}" for layer in layers if f"{layer}/{agg}" in accs]
        if keys:
            accuracy[agg] = torch.stack([accs[k] for k in keys])
            lambdas[agg] = torch.stack([probes.chosen[k] for k in keys])
    return ProbeResult(list(layers), accuracy, lambdas, counts["fit"], counts["val"], counts["test"])


def has_class_token(model: torch.nn.Module) -> bool:
    """Whether token 0 of ``model``'s token sequence is a class (CLS) token: timm's ``has_class_token``, else a
    ``cls_token`` that is not None, else any prefix token (``num_prefix_tokens > 0``)."""
    flag = getattr(model, "has_class_token", None)
    if flag is not None:
        return bool(flag)
    if hasattr(model, "cls_token"):
        return model.cls_token is not None
    return getattr(model, "num_prefix_tokens", 0) > 0


def probe_aggregations(model: torch.nn.Module) -> tuple[str, ...]:
    """The probe inputs of paper Fig 11 for ``model``: for a model with a class token (a CLS ViT), the CLS
    token (``"first"``), the mean of the spatial tokens (``"gap_spatial"``) and one probe per token
    (``"tokens"``); for a GAP ViT or a CNN, the global average (``"gap"``) and one probe per token, and for a
    GAP ViT with register tokens also the mean of the spatial tokens (``"gap_spatial"``, registers left out).
    ``"first"`` is only offered with a class token: a register token is not one."""
    if has_class_token(model):
        return ("first", "gap_spatial", "tokens")
    if getattr(model, "num_prefix_tokens", 0) > 0:
        return ("gap", "gap_spatial", "tokens")
    return ("gap", "tokens")


def count_classes(batches: Iterable) -> int:
    """``1 +`` the largest label in raw ``(images, labels)`` batches (the probes' fit set, which holds
    every class)."""
    if iter(batches) is batches:     # an iterator (e.g. a generator) would be used up by counting
        raise TypeError("the probes' batches must be a re-iterable collection (a list of (images, labels) pairs), "
                        "not an iterator or generator: it is read once to count the classes and again to fit; "
                        "wrap it in list(...)")
    labels = [int(y.max()) for y in (minibatch_pair(batch)[1] for batch in batches) if len(y)]
    if not labels:
        raise ValueError("no labelled batches to count classes from")
    if max(labels) < 1:
        raise ValueError("the probes' fit set holds a single class (label 0 only): a probe needs at least 2 classes")
    return 1 + max(labels)


def spatial_probes(model: torch.nn.Module, fit: Iterable, val: Iterable, test: Iterable,
                   layers: list[str] | None = None, num_classes: int | None = None,
                   device: str | torch.device = "cpu", progress: bool = False,
                   aggregations: Sequence[str] | None = None) -> ProbeResult:
    """Linear probes of paper Fig 11 at every block output of ``model`` (:func:`~vitcnn_utils.hooks.block_outputs`
    unless ``layers`` is given), with the aggregations of :func:`probe_aggregations`; CNN maps are pooled to
    the last stage's grid. ``num_classes`` defaults to ``1 + the largest label in fit`` (every class has
    training shots). Returns a :class:`~vitcnn_utils.probes.ProbeResult`.

    ``aggregations`` overrides :func:`probe_aggregations` (e.g. ``("first",)`` for the CLS token alone, as
    :func:`block_probes` does)."""
    if num_classes is None:
        num_classes = count_classes(fit)
    return probe_layers(model, layers or block_outputs(model), fit, val, test, num_classes,
                        aggregations=aggregations or probe_aggregations(model), device=device, progress=progress)


def block_probes(models: Mapping[str, torch.nn.Module], fit, val, test, num_classes: int, aggregation: str,
                 device: str | torch.device = "cpu", progress: bool = False) -> dict[str, torch.Tensor]:
    """Linear-probe test accuracy at every block output of every model
    (:func:`~vitcnn_utils.measure.probe_layers` with one aggregation: ``"first"`` = the CLS token of a CLS
    ViT, ``"gap"`` = the mean over tokens / positions of a ResNet).

    Returns:
        ``{label: (blocks,) float64}`` accuracies in [0, 1], block order as
        :func:`~vitcnn_utils.hooks.block_layers` without the input layer.
    """
    out = {}
    for label, model in models.items():
        result = spatial_probes(model, fit, val, test, num_classes=num_classes, device=device, progress=progress,
                                aggregations=(aggregation,))
        out[label] = result.accuracy[aggregation][:, 0].clone()
    return out


def vit_skip_ratios(model: VisionTransformer, batches: Iterable, device="cpu") -> tuple[torch.Tensor, list[str]]:
    """Ratios ``(2·blocks, tokens)`` float64 and their row names (``"blocks.i attn"``, ``"blocks.i mlp"``).
    A block without skip connections (:func:`vitcnn_utils.architectures.removed_blocks`) has no ratio: its two
    rows are NaN, with a warning."""
    blocks = getattr(model, "blocks", None)
    if not blocks or not all(hasattr(b, n) for b in blocks for n in ("ls1", "norm2", "ls2")):
        raise ValueError(f"vit_skip_ratios needs a timm VisionTransformer (blocks with ls1, norm2 and ls2), not a "
                         f"{type(model).__name__}: for a timm bottleneck ResNet use resnet_skip_ratios")
    taps, names = [], []
    for i in range(len(blocks)):
        taps += [(f"blocks.{i}:in", f"blocks.{i}.ls1"), (f"blocks.{i}.norm2:in", f"blocks.{i}.ls2")]
        names += [f"blocks.{i} attn", f"blocks.{i} mlp"]
    ratios = _ratios(model, batches, taps, per_token=True, device=device)
    removed = removed_blocks(model)
    if removed:
        which = ", ".join(f"blocks.{i}" for i in removed)
        warnings.warn(f"{which} {'has' if len(removed) == 1 else 'have'} no skip connections (NoSkipBlock): "
                      "‖z‖/‖f(z)‖ is undefined there, so its rows are NaN", stacklevel=2)
        for i in removed:
            ratios[2 * i:2 * i + 2] = float("nan")
    return ratios, names


def resnet_skip_ratios(model: ResNet, batches: Iterable, device="cpu") -> tuple[torch.Tensor, list[str]]:
    """Ratios ``(units,)`` float64 for the bottleneck units of a timm ResNet, and the unit names."""
    units = [name for name, m in model.named_modules() if isinstance(m, Bottleneck)]
    if not units:
        raise ValueError("no bottleneck units found: skip ratios are defined for timm bottleneck ResNets")
    modules, taps = dict(model.named_modules()), []
    for name in units:
        unit = modules[name]
        identity = f"{name}.downsample" if unit.downsample is not None else f"{name}:in"
        taps.append((identity, f"{name}.bn3"))
    return _ratios(model, batches, taps, per_token=False, device=device), units


def _ratios(model, batches, taps, per_token: bool, device) -> torch.Tensor:
    layers = list(dict.fromkeys(name for pair in taps for name in pair))

    def per_image(feats):                                         # (B, sublayers[, tokens])
        return torch.stack([norm_ratio(feats[identity], feats[branch], per_token) for identity, branch in taps], dim=1)
    return mean_over_images(model, batches, layers, per_image, device=device)[0]

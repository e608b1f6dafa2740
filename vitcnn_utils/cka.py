r"""Centred kernel alignment (CKA) with linear kernels, as used by Raghu et al. (2021).

For representations :math:`X \in \mathbb{R}^{n\times p}`, :math:`Y \in \mathbb{R}^{n\times q}` of the same
``n`` examples, with Gram matrices :math:`K = XX^\top`, :math:`L = YY^\top`:

.. math:: \mathrm{CKA}(K, L) = \frac{\mathrm{HSIC}(K, L)}{\sqrt{\mathrm{HSIC}(K, K)\,\mathrm{HSIC}(L, L)}}

The paper uses **minibatch CKA** (Nguyen, Raghu & Kornblith 2021, eq. 3): over minibatches
:math:`i = 1..k`, the unbiased HSIC estimator of Song et al. (2012) is summed *separately* for the
numerator and both denominator terms, and only then combined:

.. math:: \mathrm{CKA}_{mb} = \frac{\sum_i \mathrm{HSIC}_1(K_i, L_i)}
          {\sqrt{\sum_i \mathrm{HSIC}_1(K_i, K_i)\ \sum_i \mathrm{HSIC}_1(L_i, L_i)}}

:math:`\mathrm{HSIC}_1(K, L) = \langle \tilde K, \tilde L \rangle_F / (n(n-3))`, where :math:`\tilde K` is the
*U-centred* Gram matrix (zero diagonal; off the diagonal, row, column and grand means removed with the
:math:`n-2`, :math:`n-1` normalisers). The estimate is unbiased, so CKA of unrelated representations
scatters around 0 and can be slightly negative: nothing here clamps it.

Implementation notes:

* Features are flattened to ``(n, -1)`` and mean-centred over the minibatch before the Gram product.
  U-centring annihilates any offset shared by the examples, so this changes nothing mathematically; it
  removes the cancellation a large common offset would cause in floating point. Centring happens in the
  input's precision (float64 features stay float64 until centred, whatever ``gram_dtype``) and in two
  passes, the second removing the rounding error of the first mean; only then are the features cast.
* Each layer's centred features are rescaled by a power of two that puts their largest value near 1, and the
  sums keep, per layer, one power-of-two unit shared by all minibatches (the largest seen so far; the sums
  are rescaled exactly when it grows, and across ranks before the all-reduce). Powers of two rescale
  exactly and CKA is scale invariant, so results are those of the unscaled arithmetic, while features at
  1e-300 or 1e300 no longer under/overflow in the Grams or in HSIC. Minibatches keep their relative weights.
* Gram matrices are computed once per layer and minibatch: the product ``X Xᵀ`` (``n² d``, the dominant cost)
  in ``gram_dtype`` (float64 by default; float32 is about twice as fast on a CPU and far faster on a GPU).
  They are then U-centred in float64 as a stack ``(L, n, n)``, and every layer pair's HSIC comes from one
  float64 matrix product ``(L_a, n²) @ (n², L_b)``; sums are accumulated in float64. With float32 Grams the
  CKA stays within a few 1e-9 of the float64 reference for float32 or float64 features at any scale and
  common offset (tested ≤ 1e-6 with offsets 1e3, 1e6, 1e7, a 1e-8 spread on a 1e6 offset, scales 1e±25 and,
  for float64 features, 1e±80). Memory does not grow with the number of examples.
* Inputs are checked once per minibatch (one host synchronisation): fewer than 4 examples, different ``n``
  across layers, a 0-d layer, a layer with no features ``(n, 0)``, or non-finite values (named by layer) raise
  ``ValueError``; anything but a torch tensor (e.g. a NumPy array), or complex features, raise ``TypeError``.
  A layer that is constant over all examples has
  HSIC(K, K) = 0 exactly; its CKA is undefined and reported as NaN with a warning (so is a layer that varies
  but whose HSIC(K, K) still vanishes, e.g. 4 examples of which 3 are equal).
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from .distributed import all_reduce_sum

Features = Sequence[torch.Tensor] | Mapping[str, torch.Tensor]


GRAM_DTYPES = {"float64": torch.float64, "float32": torch.float32}  # command-line names of MinibatchCKA(gram_dtype=)

def u_centre_(grams: torch.Tensor) -> torch.Tensor:
    """U-centre a stack of symmetric Gram matrices ``(..., n, n)`` in place (Székely & Rizzo 2014) and
    return it. Requires ``n >= 4``."""
    n = grams.shape[-1]
    diag = grams.diagonal(dim1=-2, dim2=-1)
    diag.zero_()
    means = grams.sum(-1) / (n - 2)                          # (..., n): row sums; rows = columns
    means -= means.sum(-1, keepdim=True) / (2 * (n - 1))
    grams -= means.unsqueeze(-1)
    grams -= means.unsqueeze(-2)
    diag.zero_()
    return grams


_NORMAL_EXPONENTS = {torch.float64: (-1022, 1023), torch.float32: (-126, 127)}
_NEVER = -(2 ** 40)               # the exponent of a layer not (yet) seen to vary: far below any float exponent


def _pow2(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exactly ``2**k`` in ``dtype`` (float32 or float64) for an integer tensor ``k`` within the dtype's normal
    exponent range, built from the bits (no ``pow``/``exp2`` rounding)."""
    if dtype == torch.float64:
        return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((k.to(torch.int32) + 127) << 23).view(torch.float32)


def _ldexp(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``t * 2**k`` exactly (unless the result under/overflows) for an integer tensor ``k`` of any size,
    broadcast against ``t``; on the device, without a host synchronisation."""
    lo, hi = _NORMAL_EXPONENTS[t.dtype]
    k = k.clamp(3 * lo, 3 * hi)                  # beyond this every finite t under/overflows anyway
    for _ in range(3):
        step = k.clamp(lo, hi)
        t = t * _pow2(step, t.dtype)
        k = k - step
    return t


def _centred_gram(x: torch.Tensor, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gram matrix of one layer's minibatch-mean-centred features ``x (n, ...)``, rescaled by a power of two.

    Returns ``(gram, varying, exponent)``: ``gram`` is float64 ``(n, n)``, the Gram matrix of the centred
    features multiplied by ``2**-exponent``, so their Gram matrix is ``gram * 4**exponent``; ``exponent`` (0-d
    int64) puts the largest centred value near 1, which keeps the products and every HSIC of any finite
    input far from under/overflow (CKA is scale invariant, and a power of two rescales exactly). ``gram`` is
    exactly 0 for a representation that is constant over the examples; ``varying`` (0-d bool) says whether it
    varies, tested exactly on the values as given.

    Centring and rescaling happen before any cast to ``dtype``, in the input's precision (at least ``dtype``;
    float64 for integers), in two passes: the first subtracts each feature's midrange and rescales, with no
    sum that could overflow; the second subtracts the mean of the result, whose rounding error is relative to
    the spread of the features, not to their offset.
    """
    x = x.detach().reshape(len(x), -1).to(device=device)
    work = torch.promote_types(x.dtype, dtype) if x.is_floating_point() else torch.float64
    low, high = x.amin(0), x.amax(0)                             # (p,) per feature (faster than aminmax)
    varying = (high > low).any()                                 # exact: no tolerance to break scale invariance
    half_low, half_high = low.to(work) / 2, high.to(work) / 2    # halves: neither sum nor difference overflows
    half_range = (half_high - half_low).amax()                   # >= max |centred value| / 2
    lo, hi = _NORMAL_EXPONENTS[work]
    exponent = torch.frexp(half_range).exponent.to(torch.int64) + 1
    exponent = torch.where(torch.isfinite(half_range) & (half_range > 0), exponent, 0).clamp(-hi, -lo)
    scale = _pow2(-exponent, work)                               # exact; |x - midrange| * scale <= 1
    x = torch.addcmul((half_low + half_high).mul_(-scale), x, scale)   # a new tensor, never the caller's
    x -= x.mean(0, keepdim=True)
    x = x.to(dtype)
    gram = (x @ x.T).double()
    return gram.mul_(varying), varying, exponent


class Gram(NamedTuple):
    """A layer's minibatch-mean-centred Gram matrix ``(n, n)`` (float64) in units of ``4**exponent``, whether
    the layer varies over the minibatch (0-d bool), and that exponent (0-d int64), as :meth:`MinibatchCKA.gram`
    returns it: the Gram matrix of the centred features is ``matrix * 4**exponent``. :meth:`MinibatchCKA.update`
    takes these in place of features. ``shape``, ``ndim`` and ``device`` are the matrix's, so input checks
    read a Gram like features: ``shape[0]`` is the number of examples either way."""
    matrix: torch.Tensor
    varying: torch.Tensor
    exponent: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    @property
    def ndim(self) -> int:
        return self.matrix.ndim

    @property
    def device(self) -> torch.device:
        return self.matrix.device


def _split_names(features: Features, prefix: str) -> tuple[list[str], list[torch.Tensor]]:
    if isinstance(features, Mapping):
        names, values = list(features.keys()), list(features.values())
    elif isinstance(features, (torch.Tensor, Gram)) or not isinstance(features, Sequence):
        raise TypeError(f"pass a list (or dict) of per-layer tensors, not a single {type(features).__name__}")
    else:
        names, values = [f"{prefix}[{i}]" for i in range(len(features))], list(features)
    for name, value in zip(names, values):
        if not isinstance(value, (torch.Tensor, Gram)):
            kind = f"{type(value).__module__}.{type(value).__name__}".removeprefix("builtins.")
            hint = " (convert it with torch.from_numpy)" if kind == "numpy.ndarray" else ""
            raise TypeError(f"layer {name!r} is a {kind}, not a torch.Tensor{hint}: pass one (n, ...) tensor "
                            "per layer")
        if not isinstance(value, Gram):
            _check_layer(name, value)
    return names, values


def _check_layer(name: str, value: torch.Tensor) -> None:
    """One clear error for a tensor that cannot be a layer's ``(n, ...)`` features."""
    if value.ndim == 0:
        raise ValueError(f"layer {name!r} is a 0-d tensor: each layer must be (n, ...), its first dimension "
                         "the n examples of the minibatch (use x.reshape(-1, 1) for one number per example)")
    if value.is_complex():
        raise TypeError(f"layer {name!r} is {value.dtype}: CKA takes real features (pass x.real, x.abs() or "
                        "torch.view_as_real(x))")
    if value.numel() == 0 and value.shape[0] > 0:
        raise ValueError(f"layer {name!r} has no features (shape {tuple(value.shape)}): each example needs at "
                         "least one number")


def _usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if tensors can be made there; else one line naming it and the fix."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device ({err}); use e.g. 'cpu' or 'cuda'") from None
    if dev.type == "meta":
        raise ValueError("device='meta' holds no data: CKA needs real values; use 'cpu' or 'cuda'")
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, NotImplementedError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"device={device!r} is not available on this machine ({first[:160]}); use 'cpu', or "
                         "None for the features' own device") from None
    return dev


def _describe_change(now: list[str], before: list[str], side: str) -> str | None:
    """What differs between two lists of layer names, in words; None if they are equal."""
    if now == before:
        return None
    if sorted(now) == sorted(before):
        return f"{side}: the same layers in another order (now {now}, first {before})"
    added, missing = [n for n in now if n not in before], [n for n in before if n not in now]
    parts = [f"new {added}" if added else "", f"missing {missing}" if missing else ""]
    return f"{side}: {', '.join(p for p in parts if p) or f'now {now}, first {before}'}"


class MinibatchCKA:
    """Accumulate minibatch CKA (unbiased HSIC) between all layers of two sets of representations.

    Usage::

        cka = MinibatchCKA()
        for batch in loader:
            feats_a = capture(model_a, batch)         # dict or list of (n, ...) tensors, one per layer
            feats_b = capture(model_b, batch)
            cka.update(feats_a, feats_b)             # or cka.update(feats_a) for a within-model heatmap
        heatmap = cka.compute()                      # float64 (L_a, L_b)
        low, high = cka.interval(0.95)               # float64 (L_a, L_b) each: a 95% interval per entry

    :meth:`interval` is a delete-one-minibatch jackknife of the CKA ratio over the per-minibatch HSIC terms
    that :meth:`update` keeps (``L_a × L_b + L_a + L_b`` float64 numbers per minibatch; no extra forward
    passes), with a Student ``t`` quantile on ``k − 1`` degrees of freedom for ``k >= 2`` minibatches. It
    measures image-sampling noise only (which images were drawn), not training-seed noise.

    For the within-A, within-B and A×B heatmaps of two models with every Gram matrix computed once per
    minibatch, pass the concatenation ``{**feats_a, **feats_b}`` (or ``list_a + list_b``) to
    :meth:`update` alone and cut the square result with :func:`split_heatmap`.

    Minibatches are weighted equally, as in the estimator's definition; a ragged last batch (of at least
    4 examples) is accepted and simply contributes its own unbiased estimate. For equal weights per example
    use equal batch sizes (e.g. ``drop_last=True``).

    Args:
        gram_dtype: dtype of the Gram products ``X Xᵀ``, a ``torch.dtype`` or its name (``"float64"``, the
            default, or ``"float32"``; float32 is about 2x faster on a
            CPU, more on a GPU, and within 1e-6 of float64 for the CKA values, for features of any precision,
            offset and scale: they are centred and rescaled before the cast). U-centring, the HSIC products
            and the sums are always float64.
        device: where Gram matrices and accumulators live; default: the device of the first features.
        sync_distributed: in :meth:`compute` (and :meth:`interval`), sum the accumulators over all ranks of
            the default ``torch.distributed`` process group when one is initialised (every rank must call it;
            :meth:`interval` gathers every rank's per-minibatch terms).
    """

    def __init__(self, gram_dtype: torch.dtype = torch.float64, device: str | torch.device | None = None,
                 sync_distributed: bool = True):
        if isinstance(gram_dtype, str) and gram_dtype.removeprefix("torch.") in GRAM_DTYPES:
            gram_dtype = GRAM_DTYPES[gram_dtype.removeprefix("torch.")]
        if not isinstance(gram_dtype, torch.dtype) or gram_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"gram_dtype must be torch.float64 or torch.float32 (or the strings "
                             f"{', '.join(map(repr, GRAM_DTYPES))}), got {gram_dtype!r}")
        if device is not None:
            device = _usable_device(device)
        self.gram_dtype, self.device, self.sync_distributed = gram_dtype, device, sync_distributed
        self.reset()

    def reset(self) -> None:
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self.within = False
        # hsic_xy[a, b] = sum of HSIC(K_a, L_b) * 4**-(exponent_a[a] + exponent_b[b]); hsic_xx[a] in units of
        # 4**(2 exponent_a[a]), hsic_yy[b] of 4**(2 exponent_b[b]). A per-layer power of two shared by every
        # minibatch rescales each sum exactly and cancels in CKA; it keeps the sums in range for any scale.
        self.hsic_xy = self.hsic_xx = self.hsic_yy = None
        self.exponent_a = self.exponent_b = None
        self.nonconstant_a = self.nonconstant_b = None
        self.num_batches = self.num_examples = self.total_examples = self.total_batches = 0
        # every minibatch's own terms, for interval(): (xy (L_a, L_b), xx (L_a,), yy (L_b,), exponent_a (L_a,),
        # exponent_b (L_b,)), each in units of its own exponents (NEVER where the layer was constant)
        self._terms: list[tuple[torch.Tensor, ...]] = []
        self._buffers: dict[str, torch.Tensor | None] = {}     # _grams' (L, n, n) stacks, reused per minibatch

    # -- per minibatch ------------------------------------------------------------------------------
    def gram(self, x: torch.Tensor) -> Gram:
        """The :class:`Gram` of one layer's features ``x (n, ...)``, for :meth:`update`: lets a forward
        hook reduce each layer to ``(n, n)`` at once (see :class:`vitcnn_utils.hooks.Capture`'s
        ``transform``) instead of holding every layer's features until the pass ends."""
        if not isinstance(x, torch.Tensor) or x.ndim == 0:
            raise TypeError(f"MinibatchCKA.gram takes one layer's (n, ...) torch.Tensor, got "
                            f"{'a 0-d tensor' if isinstance(x, torch.Tensor) else type(x).__name__}")
        _check_layer("x", x)
        with torch.autocast(x.device.type, enabled=False):   # hooks run inside the forward's autocast
            return Gram(*_centred_gram(x, self.gram_dtype, self.device or x.device))

    def _grams(self, side: str, names: list[str], feats: list[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """U-centred Grams ``(L, n, n)`` in units of ``4**exponents``, whether each layer varies ``(L,)`` bool,
        and the exponents ``(L,)`` int64.

        The Grams are written into this object's buffer for ``side`` ("a" or "b"), kept from one minibatch to
        the next while ``(L, n)`` and the device stay the same: writing a fresh ``(L, n, n)`` tensor every
        minibatch cost more than the copy itself (first-touch page faults). Nothing outside this object
        holds the buffer; it is overwritten by the next :meth:`update` and freed by :meth:`reset`."""
        if not feats:
            raise ValueError("no layers given: pass at least one (n, ...) tensor")
        n = feats[0].shape[0]
        if n < 4:
            raise ValueError(f"minibatch of {n} examples: unbiased HSIC needs at least 4 per batch "
                             "(use larger batches, or drop the ragged last batch)")
        device = torch.device(self.device or feats[0].device)
        grams = self._buffers.get(side)
        if grams is None or grams.shape != (len(feats), n, n) or grams.device != device:
            self._buffers[side] = None                    # free the old buffer before making the new one
            grams = self._buffers[side] = torch.empty(len(feats), n, n, dtype=torch.float64, device=device)
        varying = torch.empty(len(feats), dtype=torch.bool, device=device)
        exponents = torch.empty(len(feats), dtype=torch.int64, device=device)
        for i, (name, x) in enumerate(zip(names, feats)):
            if x.shape[0] != n:
                raise ValueError(f"layer {name!r} has {x.shape[0]} examples, the first layer "
                                 f"{n}: every layer (and model) must see the same minibatch")
            grams[i], varying[i], exponents[i] = x if isinstance(x, Gram) else _centred_gram(x, self.gram_dtype, device)
        return u_centre_(grams), varying, exponents

    def update(self, feats_a: Features, feats_b: Features | None = None) -> None:
        """Add one minibatch.

        Args:
            feats_a: per-layer representations of model A, each ``(n, ...)`` (a list, or a dict name →
                tensor whose names are used in messages and kept as ``names_a``), or their :meth:`gram`.
            feats_b: the same ``n`` examples through model B; ``None`` (or ``feats_a`` itself) for a
                within-model heatmap, which then computes each Gram matrix only once.
        """
        names_a, list_a = _split_names(feats_a, "a")
        within = feats_b is None or feats_b is feats_a
        names_b, list_b = (names_a, list_a) if within else _split_names(feats_b, "b")
        if self.names_a is not None and (names_a, names_b, within) != (self.names_a, self.names_b, self.within):
            if within != self.within:
                change = ("the first update was " + ("within one model (feats_b=None)" if self.within else
                                                     "between two models (feats_b given)") + ", this one is not")
            else:
                changes = [_describe_change(names_a, self.names_a, "feats_a")]
                if not within:
                    changes.append(_describe_change(names_b, self.names_b, "feats_b"))
                change = "; ".join(c for c in changes if c)
            raise ValueError(f"the layers differ from those of the first update: {change}. Pass the same layers, "
                             "in the same order, to every update (or call reset() to start a new heatmap)")
        grams_a, varying_a, exps_a = self._grams("a", names_a, list_a)
        grams_b, varying_b, exps_b = (grams_a, varying_a, exps_a) if within else self._grams("b", names_b, list_b)
        n = grams_a.shape[-1]
        if grams_b.shape[-1] != n:
            raise ValueError(f"model A's minibatch has {n} examples, model B's {grams_b.shape[-1]}")
        scale = 1.0 / (n * (n - 3))
        flat_a, flat_b = grams_a.flatten(1), grams_b.flatten(1)
        xy = (flat_a @ flat_b.T) * scale                       # all layer pairs in one product
        xx = xy.diagonal().clone() if within else (flat_a * flat_a).sum(1) * scale
        yy = xx.clone() if within else (flat_b * flat_b).sum(1) * scale  # never alias xx
        # a non-finite Gram entry makes its row sums, and so its U-centred Gram's self-product, non-finite; a
        # finite one cannot overflow (the features were rescaled to |x| <= 1): one check, one host sync
        finite = torch.isfinite(torch.cat([xx, yy])).cpu()
        bad = [name for name, ok in zip(names_a + names_b, finite.tolist()) if not ok]
        if bad:
            raise ValueError(f"non-finite values (NaN/inf) in layer(s) {', '.join(map(repr, dict.fromkeys(bad)))} "
                             "of this minibatch")

        if self.names_a is None:
            self.names_a, self.names_b, self.within = names_a, names_b, within
        never = _NEVER
        own_a = torch.where(varying_a, exps_a, never)
        own_b = own_a if within else torch.where(varying_b, exps_b, never)
        self._terms.append((xy, xx, yy, own_a, own_b))
        if self.hsic_xy is None:
            # a layer constant so far gets its reference exponent from the first minibatch in which it varies
            self.hsic_xy, self.hsic_xx, self.hsic_yy = (torch.zeros_like(t) for t in (xy, xx, yy))
            self.exponent_a = torch.full_like(exps_a, never)
            self.exponent_b = self.exponent_a if within else torch.full_like(exps_b, never)
            self.nonconstant_a, self.nonconstant_b = torch.zeros_like(varying_a), torch.zeros_like(varying_b)
        # per layer, the reference exponent is the largest seen so far: the sums are rescaled exactly (by a
        # power of two) when it grows, and this minibatch's terms by powers of two <= 1, so nothing overflows;
        # what underflows is below 2**-1074 of the largest minibatch's term, lost to rounding anyway
        ref_a = torch.where(varying_a, torch.maximum(self.exponent_a, exps_a), self.exponent_a)
        ref_b = ref_a if within else torch.where(varying_b, torch.maximum(self.exponent_b, exps_b), self.exponent_b)
        old_a, old_b = self.exponent_a - ref_a, self.exponent_b - ref_b            # <= 0
        new_a = torch.where(varying_a, exps_a - ref_a, 0)                          # <= 0; constant: Gram is 0
        new_b = new_a if within else torch.where(varying_b, exps_b - ref_b, 0)
        self.hsic_xy = (_ldexp(self.hsic_xy, 2 * (old_a[:, None] + old_b[None, :]))
                        + _ldexp(xy, 2 * (new_a[:, None] + new_b[None, :])))
        self.hsic_xx = _ldexp(self.hsic_xx, 4 * old_a) + _ldexp(xx, 4 * new_a)
        self.hsic_yy = _ldexp(self.hsic_yy, 4 * old_b) + _ldexp(yy, 4 * new_b)
        self.exponent_a, self.exponent_b = ref_a, ref_b
        self.nonconstant_a = self.nonconstant_a | varying_a
        self.nonconstant_b = self.nonconstant_b | varying_b
        self.num_batches += 1
        self.num_examples += n

    # -- result ------------------------------------------------------------------------------------
    def sums(self) -> dict[str, torch.Tensor]:
        """The accumulated float64 sums (summed over ranks when distributed): ``xy (L_a, L_b)``,
        ``xx (L_a,)``, ``yy (L_b,)``, ``nonconstant_a``, ``nonconstant_b``, ``examples``, ``batches``, and the
        int64 per-layer exponents ``exponent_a (L_a,)``, ``exponent_b (L_b,)`` that give the sums' units:
        ``xy[a, b]`` is the sum of HSIC(K_a, L_b) divided by ``4**(exponent_a[a] + exponent_b[b])``,
        ``xx[a]`` divided by ``4**(2 exponent_a[a])``, ``yy[b]`` by ``4**(2 exponent_b[b])`` (CKA is unchanged)."""
        if self.hsic_xy is None:
            raise ValueError("MinibatchCKA.compute() before any update(): no minibatch was added")
        xy, xx, yy, exp_a, exp_b = self.hsic_xy, self.hsic_xx, self.hsic_yy, self.exponent_a, self.exponent_b
        dist = torch.distributed
        if (self.sync_distributed and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):                 # one unit per layer on every rank: the largest
            common = torch.cat([exp_a, exp_b])
            dist.all_reduce(common, op=dist.ReduceOp.MAX)
            common_a, common_b = common[:len(exp_a)], common[len(exp_a):]
            da, db = exp_a - common_a, exp_b - common_b                    # <= 0: rescaled exactly, no overflow
            xy, xx, yy = _ldexp(xy, 2 * (da[:, None] + db[None, :])), _ldexp(xx, 4 * da), _ldexp(yy, 4 * db)
            exp_a, exp_b = common_a, common_b
        sums = {"xy": xy.clone(), "xx": xx.clone(), "yy": yy.clone(),
                "nonconstant_a": self.nonconstant_a.double(), "nonconstant_b": self.nonconstant_b.double(),
                "examples": torch.tensor([float(self.num_examples)], device=self.hsic_xy.device),
                "batches": torch.tensor([float(self.num_batches)], device=self.hsic_xy.device)}
        if self.sync_distributed:                                # every accumulator is a plain sum
            sums = dict(zip(sums, all_reduce_sum(list(sums.values()))))
        sums["exponent_a"], sums["exponent_b"] = exp_a.clone(), exp_b.clone()
        return sums

    def compute(self) -> torch.Tensor:
        """CKA for every layer pair: a float64 CPU tensor ``(L_a, L_b)``; NaN (with a warning naming the
        layer) where a layer was constant over every example seen. Sets ``total_examples``: the examples
        seen by all ranks (``num_examples`` counts this process's only)."""
        s = self.sums()
        self.total_examples = int(s["examples"].item())
        self.total_batches = int(s["batches"].item())
        groups = [(self.names_a, s["nonconstant_a"])]
        if not self.within:
            groups.append((self.names_b, s["nonconstant_b"]))
        for names, varying in groups:
            constant = [name for name, v in zip(names, varying.tolist()) if not v]
            if constant:
                warnings.warn(f"layer(s) {', '.join(map(repr, constant))} are constant over all "
                              f"{int(s['examples'].item())} examples: their CKA is undefined (NaN)", stacklevel=2)
        cka = _ratio(s["xy"], s["xx"], s["yy"])
        # a layer that varies has HSIC(K, K) > 0 unless its U-centred Gram matrix vanishes (a degenerate minibatch,
        # e.g. 4 examples of which 3 are equal): say so rather than return a bare NaN
        for names, self_hsic, varying in ((self.names_a, s["xx"], s["nonconstant_a"]),
                                          *(() if self.within else ((self.names_b, s["yy"], s["nonconstant_b"]),))):
            odd = [f"{name!r} ({h:.3g})" for name, h, v in zip(names, self_hsic.tolist(), varying.tolist())
                   if v and not (math.isfinite(h) and h > 0)]
            if odd:
                warnings.warn(f"layer(s) {', '.join(odd)} vary over the examples, but their HSIC(K, K) summed over "
                              "the minibatches is not positive: their CKA is undefined (NaN); use larger minibatches",
                              stacklevel=2)
        return cka.cpu()

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        r"""A ``level`` confidence interval for every entry of :meth:`compute`, from image sampling alone.

        Delete-one-minibatch jackknife of the CKA ratio, from the per-minibatch HSIC terms kept by
        :meth:`update` (no extra forward passes): with ``k`` minibatches, :math:`\theta_i` is the CKA of the
        sums without minibatch ``i`` and the standard error is
        :math:`\sqrt{\tfrac{k-1}{k}\sum_i (\theta_i - \bar\theta)^2}`; the interval is
        :meth:`compute`'s value ± the two-sided Student ``t`` quantile with ``k − 1`` degrees of freedom times
        that error. Minibatches are the sampling units, so they should be independent draws of images of
        equal size (as :func:`vitcnn_utils.data.analysis_batches` gives). Tested for coverage by simulation
        (``tests/test_cka_interval.py``). It covers image-sampling noise only, not training-seed noise.

        Under ``torch.distributed`` every rank must call it: the minibatches of all ranks are gathered and are
        the jackknife's units, giving the single-process interval of the same minibatches.

        Args:
            level: the confidence level, in (0, 1).

        Returns:
            ``(low, high)``: float64 CPU tensors ``(L_a, L_b)``, like :meth:`compute`. NaN where the CKA, or the
            CKA without one of the minibatches, is undefined (a layer constant, or varying in one minibatch
            only). Not clamped: like the estimate, the bounds can lie slightly outside [0, 1].

        Raises:
            ValueError: fewer than 2 minibatches in all (the jackknife needs ``k >= 2``), or a bad ``level``.
        """
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
            raise ValueError(f"level must be a number in (0, 1), e.g. 0.95; got {level!r}")
        s = self.sums()
        k = int(s["batches"].item())
        if k < 2:
            raise ValueError(f"interval() needs at least 2 minibatches (a delete-one-minibatch jackknife), got {k}: "
                             "split the images into several minibatches")
        xy, xx, yy = self._batch_terms(s["exponent_a"], s["exponent_b"])     # (k, ...), in the sums' units
        k = xy.shape[0]
        def without_each(t):                         # Σ_{j≠i} t_j for every i, without cancellation
            zero = torch.zeros_like(t[:1])
            before = torch.cat([zero, t.cumsum(0)[:-1]])
            after = torch.cat([t.flip(0).cumsum(0).flip(0)[1:], zero])
            return before + after
        loo = _ratio(without_each(xy), without_each(xx), without_each(yy))       # (k, L_a, L_b)
        spread = loo - loo.mean(0)
        error = torch.sqrt((k - 1) / k * spread.square().sum(0))
        half = student_t_quantile(level, k - 1) * error
        centre = _ratio(s["xy"], s["xx"], s["yy"])
        return (centre - half).cpu(), (centre + half).cpu()

    def _batch_terms(self, exponent_a: torch.Tensor, exponent_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every minibatch's ``(xy, xx, yy)`` HSIC terms stacked ``(k, L_a, L_b), (k, L_a), (k, L_b)`` in the
        units of ``exponent_a``/``exponent_b`` (those of :meth:`sums`); gathered from all ranks when
        distributed."""
        xy, xx, yy, own_a, own_b = (torch.stack(t) for t in zip(*self._terms))
        da, db = own_a - exponent_a, own_b - exponent_b                     # <= 0 where the layer varied
        xy = _ldexp(xy, 2 * (da[:, :, None] + db[:, None, :]))
        xx, yy = _ldexp(xx, 4 * da), _ldexp(yy, 4 * db)
        dist = torch.distributed
        if (self.sync_distributed and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            k, la, lb = xy.shape
            rows = _all_gather_rows(torch.cat([xy.flatten(1), xx, yy], 1))
            xy, xx, yy = rows[:, :la * lb].view(-1, la, lb), rows[:, la * lb:la * lb + la], rows[:, la * lb + la:]
        return xy, xx, yy


def _ratio(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """CKA ``xy / sqrt(xx yy)`` from (stacks of) sums ``(..., L_a, L_b)``, ``(..., L_a)``, ``(..., L_b)``; NaN
    where a self-HSIC is not positive."""
    denom = xx[..., :, None] * yy[..., None, :]
    cka = xy / torch.sqrt(denom.clamp_min(0))
    return cka.masked_fill_(~(denom > 0), float("nan"))


def _all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """``(k_r, m)`` rows of every rank, concatenated in rank order (ranks may hold different ``k_r``)."""
    dist = torch.distributed
    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    padded = rows.new_zeros(max(counts), rows.shape[1])
    padded[:rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)])


def student_t_quantile(level: float, df: int | float) -> float:
    """The two-sided Student ``t`` quantile: ``t`` with ``P(|T| <= t) = level`` for ``df`` degrees of freedom
    (the ``(1 + level) / 2`` quantile; e.g. 2.3646 for 0.95 and 7), without SciPy: bisection on
    ``P(|T| > t) = I_{df/(df+t²)}(df/2, 1/2)``, the regularised incomplete beta function by its continued
    fraction. Accurate to about 1e-12 relative."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df!r}")
    a, tail = df / 2.0, 1.0 - level

    def beyond(t):                                   # P(|T| > t)
        t2 = t * t
        return _betainc(a, 0.5, df / (df + t2), t2 / (df + t2))

    low, high = 0.0, 1.0
    while beyond(high) > tail:
        low, high = high, 2 * high
    for _ in range(200):
        mid = (low + high) / 2
        if beyond(mid) > tail:
            low = mid
        else:
            high = mid
        if high - low <= 1e-14 * high:
            break
    return (low + high) / 2


def _betainc(a: float, b: float, x: float, one_minus_x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` (``1 - x`` given separately, exact where ``x`` is near 1)."""
    if x <= 0:
        return 0.0
    if one_minus_x <= 0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log(one_minus_x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, one_minus_x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (modified Lentz; Numerical Recipes' ``betacf``)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def split_heatmap(cka: torch.Tensor, num_a: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut the square heatmap of ``A + B`` layers into ``(within A, within B, A × B)``; ``num_a`` (the layers of
    A) must leave at least one layer to each model."""
    if not isinstance(cka, torch.Tensor) or cka.ndim != 2 or cka.shape[0] != cka.shape[1]:
        shape = tuple(cka.shape) if hasattr(cka, "shape") else type(cka).__name__
        raise ValueError(f"split_heatmap takes the square (A + B, A + B) heatmap of one joint update, got {shape}")
    n = cka.shape[0]
    if isinstance(num_a, bool) or not isinstance(num_a, numbers.Integral) or not 0 < num_a < n:
        raise ValueError(f"num_a must be an int in [1, {n - 1}] (the layers of A in a heatmap of {n} layers), "
                         f"got {num_a!r}")
    return cka[:num_a, :num_a], cka[num_a:, num_a:], cka[:num_a, num_a:]


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False) -> float:
    """Linear CKA between two representations of the same ``n`` examples, in one batch, in float64.

    Args:
        x: ``(n, ...)``, flattened to ``(n, p)``.
        y: ``(n, ...)``, flattened to ``(n, q)``.
        unbiased: ``False``: the original estimator of Kornblith et al. (2019),
            ``<HKH, HLH> / (‖HKH‖ ‖HLH‖)``, in [0, 1]. ``True``: the unbiased-HSIC estimator (``n >= 4``;
            same as one :class:`MinibatchCKA` batch), which can be slightly negative.

    Returns:
        The CKA value; NaN (with a warning) if either representation is constant over the examples.
    """
    _split_names({"x": x, "y": y}, "")              # one clear error for NumPy, 0-d, complex or empty input
    if not unbiased:
        x, y = x.detach().reshape(len(x), -1).double(), y.detach().reshape(len(y), -1).double()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} examples and y {y.shape[0]}: they must be the same examples")
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise ValueError("x or y has non-finite values (NaN/inf)")
        grams = [_centred_gram(z, torch.float64, z.device)[0] for z in (x, y)]
        hsic_xy, hsic_xx, hsic_yy = (grams[0] * grams[1]).sum(), grams[0].square().sum(), grams[1].square().sum()
        if hsic_xx == 0 or hsic_yy == 0:
            warnings.warn("a representation is constant over the examples: CKA is undefined (NaN)", stacklevel=2)
            return float("nan")
        return (hsic_xy / torch.sqrt(hsic_xx * hsic_yy)).item()
    cka = MinibatchCKA(sync_distributed=False)
    cka.update({"x": x}, {"y": y})
    return cka.compute().item()


class Heatmaps:
    """Within- and cross-model CKA heatmaps of several models from one joint accumulation.

    ``heatmaps[a, b]`` is the float64 ``(layers of a, layers of b)`` block; ``heatmaps.names[a]`` lists the
    layers of model ``a``.
    """

    def __init__(self, names: dict[str, list[str]], matrix: torch.Tensor, n_images: int):
        self.names, self.matrix, self.n_images = names, matrix, n_images
        self._offsets, start = {}, 0
        for model, layers in names.items():
            self._offsets[model] = slice(start, start + len(layers))
            start += len(layers)

    def __getitem__(self, pair: tuple[str, str]) -> torch.Tensor:
        a, b = pair
        return self.matrix[self._offsets[a], self._offsets[b]]


def band_mean(matrix: torch.Tensor, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    """Mean CKA over a block of a heatmap given as fractions of depth, e.g. ``rows=(0, 0.25)`` = the lowest
    quarter of the row model's layers (NaNs ignored). Each band is ``(start, end)`` with ``0 <= start < end <= 1``."""
    for label, band in (("rows", rows), ("cols", cols)):
        ok = isinstance(band, Sequence) and len(band) == 2 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in band)
        if not (ok and 0 <= band[0] < band[1] <= 1):
            raise ValueError(f"{label} must be (start, end) fractions of depth with 0 <= start < end <= 1, e.g. "
                             f"(0, 0.25); got {band!r}")
    r, c = matrix.shape
    block = matrix[int(rows[0] * r):max(int(rows[0] * r) + 1, round(rows[1] * r)),
                   int(cols[0] * c):max(int(cols[0] * c) + 1, round(cols[1] * c))]
    return torch.nanmean(block.double()).item()


def best_match(matrix: torch.Tensor) -> torch.Tensor:
    """For each column layer, the row layer with the highest CKA (NaNs ignored): ``(columns,)`` int64 indices;
    ``-1`` for a column that is NaN throughout (a constant layer: no layer matches it). A caller counting
    matches must count only indices ``>= 0`` (``-1 < half`` is true)."""
    match = _nan_to_minus_inf(matrix).argmax(0)
    return match.masked_fill_(torch.isnan(matrix).all(0), -1)


def nanmax(matrix: torch.Tensor, dim: int | None = None):
    """Maximum ignoring NaN (undefined CKA of constant layers): a float, or values along ``dim``; NaN where
    every value is NaN (never ``-inf``)."""
    filled = _nan_to_minus_inf(matrix)
    if dim is None:
        return float("nan") if bool(torch.isnan(matrix).all()) else filled.max().item()
    return filled.max(dim).values.masked_fill_(torch.isnan(matrix).all(dim), float("nan"))


def _nan_to_minus_inf(matrix: torch.Tensor) -> torch.Tensor:
    """float64 copy in which undefined (NaN) CKA values can never win a maximum."""
    return torch.nan_to_num(matrix.double(), nan=-torch.inf)

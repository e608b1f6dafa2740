"""A chapter's parameters, declared once.

Each chapter module declares ``Params``, a frozen dataclass extending :class:`ChapterParams` with its models and
sizes. That declaration is the only place a default is written: the chapter's ``run(params, **overrides)``
reads it, the notebook's ``parameters`` cell (papermill's) must list exactly its fields with the same defaults,
and ``params/paper/<chapter>.yaml`` may only set its fields; ``tests/test_params.py`` checks both.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from .. import cache
from ..cka import GRAM_DTYPES
from .. import data as vdata

P = TypeVar("P", bound="ChapterParams")

BOOK_FIELDS = ("figures_dir", "results_dir", "seed_twins")   # read by the notebook around run(), not by run()


@dataclass(frozen=True)
class ChapterParams:
    """The parameters every measuring chapter takes.

    Attributes:
        weights: ``{timm model name: local weights file}``, for machines without the model hub.
        pretrained: fetch timm weights from the hub for names not in ``weights``.
        data: ``"fashion-mnist"`` or an ImageNet-style folder ``root/<class>/<image>`` (or ``root/val/...``).
        data_dir: the folder with the Fashion-MNIST IDX files (``None``: searched).
        image_size: image folders' crop side in pixels (``None``: 224); Fashion-MNIST is 28 px.
        device: where the models run (``"cpu"``, ``"cuda"``, ...).
        seed: draw ``d`` of the images uses ``seed + d``.
        n_draws: independent draws of analysis images.
        use_cache: reuse results of identical earlier computations (:mod:`vitcnn_utils.cache`).
        gram_dtype: precision of every CKA Gram product (:class:`~vitcnn_utils.cka.MinibatchCKA`): ``"float64"``
            (the book's) or ``"float32"``, about twice as fast on a CPU and much faster on most GPUs. Measured on
            the whole default book (docs/benchmarks.md): the cold build 21:35 → 17:36 on a 2-core AMD EPYC, every
            result within 3.7e-9 of float64's, and no number or verdict the book prints changed.
        figures_dir, results_dir: where the notebook saves figures and records the measured numbers.
        seed_twins: the notebook also runs every model's seed twin (same spec, training seed 1), so that the
            verdicts' intervals cover training seeds; ``False`` for your own models.
    """
    weights: Mapping[str, str] = field(default_factory=dict)
    pretrained: bool = False
    data: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = None
    device: str = "cpu"
    seed: int = 0
    n_draws: int = 5
    use_cache: bool = True
    gram_dtype: str = "float64"
    figures_dir: str = "book/chapters/figures"
    results_dir: str = "book/chapters/results"
    seed_twins: bool = True

    def __post_init__(self):
        if isinstance(self.n_draws, bool) or not isinstance(self.n_draws, int) or self.n_draws < 1:
            raise ValueError(f"n_draws must be a whole number of at least 1, got {self.n_draws!r}")
        if not isinstance(self.gram_dtype, str) or self.gram_dtype not in GRAM_DTYPES:
            raise ValueError(f"gram_dtype must be one of {', '.join(map(repr, GRAM_DTYPES))}, got {self.gram_dtype!r}")

    @classmethod
    def resolve(cls: type[P], params: P | None = None, overrides: Mapping[str, Any] | None = None) -> P:
        """``params`` (default: all defaults) with ``overrides`` applied; an unknown name is a TypeError that
        lists the chapter's parameters."""
        if params is not None and not isinstance(params, cls):
            raise TypeError(f"params must be a {cls.__module__}.{cls.__qualname__}, got {type(params).__name__}")
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown parameter(s) {', '.join(unknown)}; this chapter's parameters are: "
                            f"{', '.join(f.name for f in fields(cls))}")
        return dataclasses.replace(params if params is not None else cls(), **overrides)

    @classmethod
    def from_namespace(cls: type[P], namespace: Mapping[str, Any]) -> P:
        """The parameters a notebook's ``parameters`` cell defined (its globals), by field name."""
        missing = [f.name for f in fields(cls) if f.name not in namespace]
        if missing:
            raise NameError(f"the notebook's parameters cell does not define {', '.join(missing)}")
        return cls(**{f.name: namespace[f.name] for f in fields(cls)})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{name: default}`` of every field, in declaration order."""
        return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in fields(cls)}

    def run_arguments(self) -> dict[str, Any]:
        """The fields ``run`` reads (all but :data:`BOOK_FIELDS`), as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in BOOK_FIELDS}


@dataclass(frozen=True)
class Draw:
    """One independent draw of a chapter's images: draw ``index`` uses ``seed`` (the chapter's ``seed +
    index``) for its analysis images and its probe shots. Every chapter loops over :func:`draws`.

    Attributes:
        index, seed: the draw and its image seed.
        data_key: :func:`vitcnn_utils.cache.data_fingerprint` of the chapter's data (its location and files).
        params: the chapter's parameters (data, data_dir, image_size).
    """
    index: int
    seed: int
    data_key: dict
    params: ChapterParams

    def images(self, n_images: int, batch_size: int) -> "DrawImages":
        """The draw's analysis images: ``n_images`` test images in minibatches
        (:func:`vitcnn_utils.data.analysis_batches`), loaded on first use."""
        p = self.params
        return DrawImages(lambda: vdata.analysis_batches(p.data, n_images, batch_size, seed=self.seed,
                                                         data_dir=p.data_dir, image_size=p.image_size),
                          self.key(n=n_images, batch=batch_size))

    def probe_images(self, shots: int, val_per_class: int, n_test: int, batch_size: int
                     ) -> tuple["DrawImages", "DrawImages", "DrawImages"]:
        """The draw's ``(fit, val, test)`` probe images (:func:`vitcnn_utils.data.probe_batches`), loaded on first
        use (the three together)."""
        p = self.params
        load = functools.cache(lambda: vdata.probe_batches(p.data, shots, val_per_class, n_test, batch_size,
                                                           seed=self.seed, data_dir=p.data_dir,
                                                           image_size=p.image_size))
        key = self.key(shots=shots, val_per_class=val_per_class, n_test=n_test, batch=batch_size)
        return tuple(DrawImages(lambda k=k: load()[k], {**key, "split": split})
                     for k, split in enumerate(("fit", "val", "test")))

    def key(self, **more) -> dict:
        """What identifies this draw's images in a cache key (data files, seed, image size), with ``more``
        (image counts, batch size)."""
        return {"data": self.data_key, "seed": self.seed, "image_size": self.params.image_size, **more}


class DrawImages:
    """A draw's images: an iterable of ``(images (B, C, H, W), labels (B,))`` minibatches with a length, loaded
    on first use, and :meth:`cache_key`, which identifies them when they are a measurement's argument
    (:func:`vitcnn_utils.cache.measured`), so that a cached measurement never loads its images."""

    def __init__(self, load: Callable[[], Any], key: dict):
        self._load, self._key = load, key

    @functools.cached_property
    def batches(self):
        return self._load()

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def cache_key(self) -> dict:
        return self._key


def draws(params: ChapterParams) -> list[Draw]:
    """The chapter's ``n_draws`` draws, draw ``d`` on seed ``params.seed + d`` (the data fingerprinted once)."""
    data_key = cache.data_fingerprint(params.data, params.data_dir)
    return [Draw(d, params.seed + d, data_key, params) for d in range(params.n_draws)]

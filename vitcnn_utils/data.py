"""Data: Fashion-MNIST (the embedded default) and ImageNet-style image folders (the paper's scale).

Fashion-MNIST is read from its original IDX files (gzipped or not). Where from:

1. the ``data_dir`` argument, if given: that folder and no other;
2. else the ``VITCNN_DATA_DIR`` environment variable, if set: that folder and no other;
3. else ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), then torchvision's
   download into ``~/.cache/vitcnn/FashionMNIST`` (needs network access).

An explicit location (1 or 2) that lacks the files is an error, never replaced by another copy. A split's
images and labels always come from one folder: a folder holding one but not the other is an error too.

Images are returned as ``uint8`` tensors ``(n, 1, 28, 28)``. Model input: :func:`to_unit_float` accepts
``uint8`` (or other integer) images in 0..255 and float images in [0, 1] alike (what torchvision's
``ToTensor()`` gives) and refuses anything else; :func:`normalize` standardises them for the zoo models.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # of the 60,000 training images, pixel values in [0, 1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DataNotFoundError(FileNotFoundError):
    """Fashion-MNIST could not be found or fetched."""


@dataclass(frozen=True)
class ImageSet:
    """A labelled image set held in memory.

    Attributes:
        images: ``uint8`` tensor ``(n, C, H, W)``.
        labels: ``int64`` tensor ``(n,)``.
        indices: ``int64`` tensor ``(n,)``: the positions of these images in the full split.
    """
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[idx], self.labels[idx], self.indices[idx])


def _read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (``.gz`` or plain) as a NumPy array; a truncated or corrupt file is a
    ValueError naming it."""
    fix = "re-download it or reinstall dataset-fashion-mnist"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}): {fix}") from None
    if len(data) < 4:
        raise ValueError(f"{path} is truncated or corrupt ({len(data)} bytes, no IDX header): {fix}")
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic 0x{magic:08x})")
    ndim, offset = magic & 0xFF, 4 + 4 * (magic & 0xFF)
    if len(data) < offset:
        raise ValueError(f"{path} is truncated or corrupt ({len(data)} bytes, header needs {offset}): {fix}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = offset + math.prod(shape)
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes, an IDX array of shape {shape} "
                         f"has {expected}: {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _files_in(folder: Path, names: tuple[str, ...]) -> tuple[list[Path] | None, list[str]]:
    """The split's files ``names`` from one place in ``folder`` (``folder/`` or torchvision's
    ``folder/FashionMNIST/raw/``; each file gzipped or not): ``(paths, [])`` when one place holds all of them,
    else ``(None, names missing)`` from the place holding the most."""
    best: list[str] = list(names)
    for place in (folder, folder / "FashionMNIST" / "raw"):
        found = {n: next((c for c in (place / f"{n}.gz", place / n) if c.is_file()), None) for n in names}
        missing = [n for n, path in found.items() if path is None]
        if not missing:
            return [found[n] for n in names], []
        if len(missing) < len(best):
            best = missing
    return None, best


def _locate(split: str, data_dir: str | os.PathLike | None, download: bool) -> list[Path]:
    """The ``(images, labels)`` files of ``split``, both from one folder (see the module docstring)."""
    names = _FILES[split]
    if data_dir is not None and str(data_dir) == "":
        raise ValueError("data_dir is an empty string: pass a folder, or None to search")
    if data_dir is not None:
        what, folder, instead = f"data_dir {data_dir}", Path(data_dir), "pass no data_dir"
    elif os.environ.get("VITCNN_DATA_DIR"):
        what, folder = f"VITCNN_DATA_DIR {os.environ['VITCNN_DATA_DIR']}", Path(os.environ["VITCNN_DATA_DIR"])
        instead = "unset VITCNN_DATA_DIR"
    else:
        folder = None
    if folder is not None:  # an explicit location: used or refused, never replaced
        where = f"{instead} to use {DEBIAN_DIR} or torchvision's download"
        if folder.exists() and not folder.is_dir():
            raise DataNotFoundError(f"{what} is a file, not a folder: point it at the folder holding the "
                                    f"Fashion-MNIST IDX files (e.g. {folder.parent}), or {where}")
        if not folder.is_dir():
            raise DataNotFoundError(f"{what} does not exist: point it at the folder holding the Fashion-MNIST "
                                    f"IDX files, or {where}")
        paths, missing = _files_in(folder, names)
        if paths is None:
            raise DataNotFoundError(f"{what} holds no {' and no '.join(missing)} (gzipped or not, in the folder "
                                    f"or its FashionMNIST/raw/): put the {split} files there, or {where}")
        return paths
    cache_dir = Path.home() / ".cache" / "vitcnn"
    for folder in (DEBIAN_DIR, cache_dir):
        paths, missing = _files_in(folder, names)
        if paths is not None:
            return paths
        if len(missing) < len(names):  # an incomplete copy: never mix in another folder's files
            raise DataNotFoundError(f"{folder} holds no {' and no '.join(missing)} but has the other {split} "
                                    f"file: an incomplete copy (reinstall it, or pass data_dir= a complete one)")
    if not download:
        raise DataNotFoundError(_missing_message("download=False"))
    _download(cache_dir)
    paths, _ = _files_in(cache_dir, names)
    if paths is None:
        raise DataNotFoundError(_missing_message("torchvision reported success but no files appeared"))
    return paths


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST
        for train in (True, False):
            FashionMNIST(root, train=train, download=True)
    except Exception as err:  # network errors come in many types
        raise DataNotFoundError(_missing_message(str(err))) from None


def _missing_message(detail: str) -> str:
    return ("Fashion-MNIST was not found. Provide it in one of three ways:\n"
            "  1. sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu; files land in "
            f"{DEBIAN_DIR})\n"
            "  2. point data_dir= (or the VITCNN_DATA_DIR environment variable) at a folder holding\n"
            "     train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz\n"
            "  3. with network access, it is downloaded by torchvision into ~/.cache/vitcnn\n"
            f"(download attempt: {detail})")


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None,
                       download: bool = True) -> ImageSet:
    """Load a Fashion-MNIST split into memory.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        data_dir: folder with the IDX files (gzipped or not): used, or refused if it lacks them; ``None``
            searches (``VITCNN_DATA_DIR``, then the Debian copy; see the module docstring).
        download: with no explicit location, fall back to torchvision's download when the files are nowhere
            to be found.

    Returns:
        An :class:`ImageSet` with ``uint8`` images ``(n, 1, 28, 28)``.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = _locate(split, data_dir, download)
    images, labels = (_read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise ValueError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    torch.arange(len(labels)))


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Images ``(n, C, H, W)`` as ``float32`` in [0, 1], the one convention every model's preprocessing
    starts from.

    * ``uint8`` (or any integer dtype) images hold pixel values 0..255 and are divided by 255;
    * float images must already lie in [0, 1] (torchvision's ``ToTensor()``, or ``uint8 / 255``) and are
      kept as they are.

    Anything else is refused, never guessed at or clamped: float images outside [0, 1] (0..255 floats, or
    images already normalised with a mean and std) or with NaN/inf are a ValueError, integers outside
    0..255 too, and other dtypes (bool, complex) a TypeError.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (n, C, H, W), got {type(images).__module__}."
                        f"{type(images).__name__}" + (": wrap it with torch.from_numpy(images)"
                                                      if isinstance(images, np.ndarray) else ""))
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if images.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few kernels for these: compare as int64
        images = images.to(torch.int64)
    if images.dtype == torch.bool or images.is_complex():
        raise TypeError(f"images must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")
    if images.numel() == 0:
        return images.float()
    low, high = images.min(), images.max()
    if not images.is_floating_point():
        if low < 0 or high > 255:
            raise ValueError(f"integer images must lie in [0, 255] (got min {low.item()}, max {high.item()}): "
                             f"pass uint8 pixel values 0..255 or float images in [0, 1] (16-bit images: "
                             f"images / 65535)")
        return images.float() / 255.0
    if not (low >= 0 and high <= 1):  # also catches NaN (every comparison with NaN is False)
        finite = bool(torch.isfinite(images).all())
        got = (f"min {low.item():.4g}, max {high.item():.4g}" if finite else
               "nan or inf values" if not torch.isnan(images).any() else "nan values")
        raise ValueError(f"float images must lie in [0, 1] (got {got}): pass uint8 pixel values 0..255 or "
                         f"float images in [0, 1] such as torchvision's ToTensor() gives; 0..255 floats: divide "
                         f"by 255; do not normalise them yourself (the model's preprocessor does)")
    return images.float()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Fashion-MNIST images ``(n, 1, 28, 28)``, ``uint8`` 0..255 or float in [0, 1] (see
    :func:`to_unit_float`, which refuses anything else) → standardised ``float32`` model input."""
    return (to_unit_float(images) - FMNIST_MEAN) / FMNIST_STD


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(len(labels))`` in which every prefix is (as nearly as possible)
    class-balanced. Taking prefixes gives nested subsets: the 3% subset lies inside the 10% one."""
    return _stratified(labels, seed)[0]


def _stratified(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`stratified_order` and, in the same order, each example's rank within its class's seeded
    permutation (so ``rank < k`` picks exactly ``k`` of every class holding at least ``k``)."""
    gen = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in labels.unique(sorted=True)]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    # rank of each example within its class, normalised to [0, 1): interleaves the classes evenly
    ranks = torch.cat([torch.arange(len(idx)) for idx in per_class])
    keys = torch.cat([torch.arange(len(idx), dtype=torch.float64) / len(idx) for idx in per_class])
    order = torch.cat(per_class)
    ties = torch.rand(len(order), generator=gen, dtype=torch.float64) * 1e-9
    sort = torch.argsort(keys + ties)
    return order[sort], ranks[sort]


def _count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum``; a float, string or bool is a TypeError saying so."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number (an int), got {value!r} ({type(value).__name__})"
                        + (f": pass {name}={int(value)}" if isinstance(value, float) and value.is_integer() else ""))
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def fraction_subset(data: ImageSet, fraction: float, seed: int = 0) -> ImageSet:
    """The first ``round(fraction · n)`` images of :func:`stratified_order` (nested across fractions)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return data
    count = round(fraction * len(data))
    return data.subset(stratified_order(data.labels, seed)[:count])


def analysis_subset(data: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """``n`` class-balanced images chosen by ``seed``, for the analyses (CKA, attention, probes)."""
    n = _count("n", n, minimum=0)
    if not 0 < n <= len(data):
        raise ValueError(f"n must be in [1, {len(data)}] for this split, got {n}")
    return data.subset(stratified_order(data.labels, seed)[:n])


def _check_sizes(n: int, batch_size: int) -> None:
    """Every minibatch of ``n`` images in batches of ``batch_size`` must hold at least 4 (unbiased HSIC)."""
    batch_size = _count("batch_size", batch_size, minimum=0)
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4 (unbiased HSIC), got {batch_size}")
    if 0 < n % batch_size < 4:
        raise ValueError(f"{n} images in batches of {batch_size} leave a last minibatch of {n % batch_size}; "
                         f"unbiased HSIC needs at least 4 per minibatch: choose a number of images whose "
                         f"remainder by the batch size is 0 or at least 4")


def batches(data: ImageSet, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Raw ``(uint8 images (b, C, H, W), labels (b,))`` minibatches of all of ``data``, in order; each model
    applies its own preprocessing (:func:`vitcnn_utils.data.preprocessor`). Every minibatch has at least 4
    images (unbiased HSIC), else a ValueError says how to choose the sizes."""
    _check_sizes(len(data), batch_size)
    return [(data.images[i:i + batch_size], data.labels[i:i + batch_size])
            for i in range(0, len(data), batch_size)]


FOLDER_IMAGE_SIZE = 224  # image folders' default crop side (px), the paper's ViT-B/16 and ResNet-50 input


def _image_size(source: str, image_size: int | None) -> int | None:
    """``image_size`` checked against ``source``: Fashion-MNIST is 28 px (``None`` or 28, never resized); an
    image folder is cropped to ``image_size`` px (``None``: :data:`FOLDER_IMAGE_SIZE`)."""
    if source == "fashion-mnist":
        if image_size not in (None, 28):
            raise ValueError(f"Fashion-MNIST images are 28 px; image_size applies to image folders: pass "
                             f"image_size=None (or 28) with data='fashion-mnist', got {image_size}")
        return None
    if image_size is None:
        return FOLDER_IMAGE_SIZE
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels (or None for {FOLDER_IMAGE_SIZE}), "
                         f"got {image_size!r}")
    return image_size


def analysis_batches(source: str, n_images: int, batch_size: int, seed: int = 0,
                     data_dir: str | None = None, image_size: int | None = None,
                     shard: tuple[int, int] | None = None):
    """The images of an analysis: ``source="fashion-mnist"`` takes ``n_images`` class-balanced test images
    (raw ``uint8`` ``(b, 1, 28, 28)``); any other ``source`` is an ImageNet-style folder
    (``root/<class>/<image>``), resized and centre-cropped to ``image_size`` px (``None``: 224) as float
    ``(b, 3, image_size, image_size)`` tensors in [0, 1], a seeded random subset of ``n_images``. A ``source``
    holding ``train/`` and ``val/`` (the layout :func:`probe_batches` needs) means its ``val/``.

    Fashion-MNIST is 28 px and is never resized: ``image_size`` other than ``None`` or 28 with it is a
    ValueError. ``data_dir`` is Fashion-MNIST's folder (see :func:`load_fashion_mnist`).

    ``shard=(rank, world_size)`` keeps this process's share for a ``torch.distributed`` run: minibatches
    ``rank, rank + world_size, ...`` of the same sequence (only those images are read); every process must get
    at least one minibatch.

    Returns a re-iterable of ``(images, labels)`` minibatches.
    """
    n_images = _count("n_images", n_images)
    _count("batch_size", batch_size, minimum=0)     # at least 4: see _check_sizes
    image_size = _image_size(source, image_size)
    if source == "fashion-mnist":
        return _shard(batches(analysis_subset(load_fashion_mnist("test", data_dir), n_images, seed), batch_size),
                      shard)
    root = Path(source)
    if (root / "train").is_dir() and (root / "val").is_dir():
        root = root / "val"
    return _FolderBatches(root, n_images, batch_size, seed, image_size, shard=shard)


def _shard(items: list, shard: tuple[int, int] | None) -> list:
    """Every ``world``-th item from ``rank`` for ``shard=(rank, world)``; all items for ``None``."""
    if shard is None:
        return items
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
    if len(items) < world:
        raise ValueError(f"{len(items)} minibatches cannot be shared by {world} processes: use more images or "
                         f"smaller batches (every process needs at least one minibatch)")
    return items[rank::world]


def probe_batches(source: str, shots: int, val_per_class: int, n_test: int, batch_size: int, seed: int = 0,
                  data_dir: str | None = None, image_size: int | None = None):
    """The three image sets of a linear-probe experiment, as re-iterables of raw ``(images, labels)``
    minibatches: ``shots`` training images per class to fit the probes, ``val_per_class`` further (disjoint)
    training images per class to choose the regularisation, and ``n_test`` class-balanced test images.

    ``source="fashion-mnist"`` uses its train and test splits (28 px ``uint8``; ``image_size`` must be
    ``None`` or 28); any other ``source`` is a folder holding ImageNet-style ``train/`` and ``val/`` folders
    (``<class>/<image>``), read as in :func:`analysis_batches` (``image_size`` px, ``None``: 224).
    """
    shots, val_per_class = _count("shots", shots), _count("val_per_class", val_per_class)
    n_test, _ = _count("n_test", n_test), _count("batch_size", batch_size, minimum=0)
    image_size = _image_size(source, image_size)
    if source == "fashion-mnist":
        train = load_fashion_mnist("train", data_dir)
        fit_idx, val_idx = _fit_val_indices(train.labels, shots, val_per_class, seed)
        return (batches(train.subset(fit_idx), batch_size), batches(train.subset(val_idx), batch_size),
                batches(analysis_subset(load_fashion_mnist("test", data_dir), n_test, seed), batch_size))
    root = Path(source)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root / split} does not exist: a probe source folder needs train/ and val/ "
                                    "ImageNet-style subfolders")
    from torchvision.datasets import ImageFolder
    fit_idx, val_idx = _fit_val_indices(torch.tensor(ImageFolder(str(root / "train")).targets), shots,
                                        val_per_class, seed)
    return (_FolderBatches(root / "train", None, batch_size, seed, image_size, indices=fit_idx),
            _FolderBatches(root / "train", None, batch_size, seed, image_size, indices=val_idx),
            _FolderBatches(root / "val", n_test, batch_size, seed, image_size))


def _fit_val_indices(labels: torch.Tensor, shots: int, val_per_class: int, seed: int):
    """Disjoint class-balanced index sets of the training labels: exactly ``shots`` per class to fit, then
    ``val_per_class`` per class held out, in :func:`stratified_order` (for classes of equal size, its
    consecutive slices). A class with fewer than ``shots + val_per_class`` images is a ValueError."""
    classes, counts = labels.unique(return_counts=True)
    smallest = int(counts.argmin())
    most = int(counts[smallest])
    if shots + val_per_class > most:
        raise ValueError(f"shots + val_per_class = {shots} + {val_per_class} training images per class are more "
                         f"than class {int(classes[smallest])} has ({most}): the maximum is shots + val_per_class "
                         f"= {most}" + (f", e.g. shots={most - min(val_per_class, most - 1)}, val_per_class="
                                        f"{min(val_per_class, most - 1)}" if most > 1 else ""))
    order, rank = _stratified(labels, seed)
    return order[rank < shots], order[(rank >= shots) & (rank < shots + val_per_class)]


_HIGH_BIT_RANGES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}  # PIL modes → white


def _load_image(path: str):
    """An image file as a PIL image for the folder transforms: 8-bit images as RGB (torchvision's default
    loader), 16-bit grey ones (PIL modes ``I;16*``, and ``I`` holding values 0..65535, as PNG gives them) as
    a float ``F`` image in [0, 1], scaled by the mode's range: ``convert("RGB")`` would clip them to white.
    Float (``F``) images must already lie in [0, 1]; other ranges are a ValueError naming the file."""
    from PIL import Image
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    if image.mode in _HIGH_BIT_RANGES or image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if image.mode == "F":
            scale = 1.0
            if not (low >= 0 and high <= 1):
                raise ValueError(f"{path}: a float image with values {low:.4g}..{high:.4g}; images in a folder "
                                 f"must be 8- or 16-bit, or float in [0, 1]: convert it")
        else:
            scale = _HIGH_BIT_RANGES.get(image.mode, 65535)
            if low < 0 or high > scale:
                raise ValueError(f"{path}: a {image.mode} image with values {low:.0f}..{high:.0f}, outside the "
                                 f"16-bit range 0..65535 it is read with: save it as an 8- or 16-bit image")
        return Image.fromarray((pixels / scale).astype(np.float32))  # mode F
    return image.convert("RGB")


def _three_channels(image: torch.Tensor) -> torch.Tensor:
    """A grey ``(1, H, W)`` image (from :func:`_load_image`'s 16-bit path) as ``(3, H, W)``, as RGB images."""
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


class _FolderBatches:
    def __init__(self, root, n_images, batch_size, seed, image_size, indices=None, shard=None):
        from torchvision import transforms
        from torchvision.datasets import ImageFolder
        if not Path(root).is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist (expected root/<class>/<image>.JPEG)")
        transform = transforms.Compose([transforms.Resize(round(image_size / 0.875)),
                                        transforms.CenterCrop(image_size), transforms.ToTensor(),
                                        _three_channels])
        dataset = ImageFolder(root, transform=transform, loader=_load_image)
        if indices is not None:
            idx = torch.as_tensor(indices)
        elif not 0 < n_images <= len(dataset):
            raise ValueError(f"n_images must be in [1, {len(dataset)}] for {root}, got {n_images}")
        else:
            idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n_images]
        _check_sizes(len(idx), batch_size)
        idx = idx.tolist()
        chunks = _shard([idx[i:i + batch_size] for i in range(0, len(idx), batch_size)], shard)
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=chunks,
                                                  num_workers=min(4, os.cpu_count() or 1))

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def _input_module(model: torch.nn.Module):
    """The module that says how ``model`` reads its input (a ``vitcnn_input`` tag or timm's
    ``pretrained_cfg``): ``model`` itself, else the model inside ``DataParallel`` /
    ``DistributedDataParallel`` (``.module``), ``torch.compile`` (``._orig_mod``) or an ``nn.Sequential``
    (its first child), unwrapped as often as needed; ``None`` when there is none."""
    while model is not None:
        if getattr(model, "vitcnn_input", None) is not None or getattr(model, "pretrained_cfg", None):
            return model
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        elif isinstance(model, torch.nn.Sequential) and len(model):
            model = model[0]
        else:
            return None
    return None


def _input_channels(model: torch.nn.Module, cfg) -> int | None:
    """The number of image channels ``model`` takes: that of the convolution its timm config names
    (``first_conv``), ``None`` if it names none."""
    try:
        first = model.get_submodule(cfg.get("first_conv") or "")
    except (AttributeError, TypeError):
        return None
    return first.in_channels if isinstance(first, torch.nn.Conv2d) else None


def preprocessor(model: torch.nn.Module):
    """The function mapping raw images ``(n, C, H, W)`` to ``model``'s float32 input of the same shape.

    Raw images are ``uint8`` (or other integer) pixel values 0..255, or float images in [0, 1] such as
    torchvision's ``ToTensor()`` gives: both give the same output, for every model. Float images outside
    [0, 1] (0..255 floats, images already normalised) or with NaN are a ValueError: nothing is guessed or
    clamped (see :func:`vitcnn_utils.data.to_unit_float`).

    Zoo models (28×28 grey) get the Fashion-MNIST standardisation (:func:`vitcnn_utils.data.normalize`);
    timm models the mean/std normalisation of their pretrained config (images already resized), also inside
    ``DataParallel``, ``DistributedDataParallel``, ``torch.compile`` or as the first stage of an
    ``nn.Sequential``; a model wrapping one elsewhere is a ValueError (no guessed normalisation). A timm model
    with ``in_chans=1`` takes grey images, normalised by the mean of its config's per-channel mean and std;
    grey ``(n, 1, H, W)`` images given to an RGB model are repeated across its channels; other channel counts
    that differ from the model's are a ValueError. Models with no config at all get ImageNet's mean/std.
    """
    inner = _input_module(model)
    if inner is None:
        wrapped = next(((n, m) for n, m in model.named_modules() if n and (
            getattr(m, "vitcnn_input", None) is not None or getattr(m, "pretrained_cfg", None))), None)
        if wrapped is not None:
            raise ValueError(
                f"preprocessor cannot tell how this {type(model).__name__} normalises its input: the model it "
                f"wraps, {wrapped[0]!r} ({type(wrapped[1]).__name__}), is not where its input goes (only "
                f"DataParallel, DistributedDataParallel, torch.compile and an nn.Sequential's first child are "
                f"unwrapped): pass preprocessor(model.get_submodule({wrapped[0]!r})), or set "
                f"model.pretrained_cfg")
        inner = model
    if getattr(inner, "vitcnn_input", None) == "fashion-mnist":
        return normalize
    cfg = getattr(inner, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    channels = _input_channels(inner, cfg) or len(mean)
    if channels != len(mean):
        if channels != 1:
            raise ValueError(f"the model takes {channels}-channel images but its config has a mean/std for "
                             f"{len(mean)}: set model.pretrained_cfg's mean and std to {channels} values each")
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)  # in_chans=1: grey
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        images = to_unit_float(images)
        if images.dim() != 4:
            raise ValueError(f"images must be a batch (n, C, H, W), got shape {tuple(images.shape)}"
                             + (": add the batch dimension (images.unsqueeze(0))" if images.dim() == 3 else ""))
        got = images.shape[1]
        if got != channels and not (got == 1 and channels == 3):
            fix = ("drop the alpha channel (images[:, :3])" if got == 4 and channels == 3 else
                   "convert them to grey (torchvision.transforms.functional.rgb_to_grayscale)" if channels == 1
                   else f"pass {channels}-channel images")
            raise ValueError(f"images have {got} channels but the model takes {channels}: {fix}")
        return (images - mean_t.to(images.device)) / std_t.to(images.device)
    return preprocess

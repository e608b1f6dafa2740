"""Data: Fashion-MNIST (the embedded default) and ImageNet-style image folders (the paper's scale).

Fashion-MNIST is read from its original gzipped IDX files. They are looked for, in order, in

1. the ``data_dir`` argument,
2. the ``VITCNN_DATA_DIR`` environment variable,
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``),
4. torchvision's download into ``~/.cache/vitcnn/FashionMNIST`` (needs network access).

Images are returned as ``uint8`` tensors ``(n, 1, 28, 28)``; :func:`normalize` turns them into the float
input the zoo models expect.
"""
from __future__ import annotations

import gzip
import os
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
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic 0x{magic:08x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(name: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for candidate in (folder / f"{name}.gz", folder / name, folder / "FashionMNIST" / "raw" / name):
            if candidate.is_file():
                return candidate
    return None


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs = [Path(d) for d in (data_dir, os.environ.get("VITCNN_DATA_DIR")) if d]
    return dirs + [DEBIAN_DIR, Path.home() / ".cache" / "vitcnn"]


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
        data_dir: folder with the IDX files (gzipped or not); see the module docstring for the search order.
        download: fall back to torchvision's download when the files are nowhere to be found.

    Returns:
        An :class:`ImageSet` with ``uint8`` images ``(n, 1, 28, 28)``.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folders = _candidate_dirs(data_dir)
    paths = [_find(name, folders) for name in _FILES[split]]
    if None in paths:
        if not download:
            raise DataNotFoundError(_missing_message("download=False"))
        _download(folders[-1])
        paths = [_find(name, folders) for name in _FILES[split]]
        if None in paths:
            raise DataNotFoundError(_missing_message("torchvision reported success but no files appeared"))
    images, labels = (_read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise ValueError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    torch.arange(len(labels)))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` Fashion-MNIST images ``(n, 1, 28, 28)`` → standardised ``float32`` model input."""
    return (images.float() / 255.0 - FMNIST_MEAN) / FMNIST_STD


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(len(labels))`` in which every prefix is (as nearly as possible)
    class-balanced. Taking prefixes gives nested subsets: the 3% subset lies inside the 10% one."""
    gen = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in labels.unique(sorted=True)]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    # rank of each example within its class, normalised to [0, 1): interleaves the classes evenly
    keys = torch.cat([torch.arange(len(idx), dtype=torch.float64) / len(idx) for idx in per_class])
    order = torch.cat(per_class)
    ties = torch.rand(len(order), generator=gen, dtype=torch.float64) * 1e-9
    return order[torch.argsort(keys + ties)]


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
    if not 0 < n <= len(data):
        raise ValueError(f"n must be in [1, {len(data)}] for this split, got {n}")
    return data.subset(stratified_order(data.labels, seed)[:n])


def _check_sizes(n: int, batch_size: int) -> None:
    """Every minibatch of ``n`` images in batches of ``batch_size`` must hold at least 4 (unbiased HSIC)."""
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4 (unbiased HSIC), got {batch_size}")
    if 0 < n % batch_size < 4:
        raise ValueError(f"{n} images in batches of {batch_size} leave a last minibatch of {n % batch_size}; "
                         f"unbiased HSIC needs at least 4 per minibatch: choose a number of images whose "
                         f"remainder by the batch size is 0 or at least 4")


def batches(data: ImageSet, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Raw ``(uint8 images (b, C, H, W), labels (b,))`` minibatches of all of ``data``, in order; each model
    applies its own preprocessing (:func:`vitcnn_utils.models.preprocessor`). Every minibatch has at least 4
    images (unbiased HSIC), else a ValueError says how to choose the sizes."""
    _check_sizes(len(data), batch_size)
    return [(data.images[i:i + batch_size], data.labels[i:i + batch_size])
            for i in range(0, len(data), batch_size)]


def analysis_batches(source: str, n_images: int, batch_size: int, seed: int = 0,
                     data_dir: str | None = None, image_size: int = 224, shard: tuple[int, int] | None = None):
    """The images of an analysis: ``source="fashion-mnist"`` takes ``n_images`` class-balanced test images
    (raw uint8); any other ``source`` is an ImageNet-style folder (``root/<class>/<image>``), resized and
    centre-cropped to ``image_size`` as float tensors in [0, 1], a seeded random subset of ``n_images``. A
    ``source`` holding ``train/`` and ``val/`` (the layout :func:`probe_batches` needs) means its ``val/``.

    ``shard=(rank, world_size)`` keeps this process's share for a ``torch.distributed`` run: minibatches
    ``rank, rank + world_size, ...`` of the same sequence (only those images are read); every process must get
    at least one minibatch.

    Returns a re-iterable of ``(images, labels)`` minibatches.
    """
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
                  data_dir: str | None = None, image_size: int = 224):
    """The three image sets of a linear-probe experiment, as re-iterables of raw ``(images, labels)``
    minibatches: ``shots`` training images per class to fit the probes, ``val_per_class`` further (disjoint)
    training images per class to choose the regularisation, and ``n_test`` class-balanced test images.

    ``source="fashion-mnist"`` uses its train and test splits; any other ``source`` is a folder holding
    ImageNet-style ``train/`` and ``val/`` folders (``<class>/<image>``).
    """
    if shots < 1 or val_per_class < 1:
        raise ValueError(f"shots and val_per_class must be at least 1, got {shots} and {val_per_class}")
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
    """Disjoint class-balanced index sets of the training labels: ``shots`` per class to fit, then
    ``val_per_class`` per class held out (consecutive slices of :func:`stratified_order`)."""
    order, classes = stratified_order(labels, seed), len(labels.unique())
    return order[:shots * classes], order[shots * classes:(shots + val_per_class) * classes]


class _FolderBatches:
    def __init__(self, root, n_images, batch_size, seed, image_size, indices=None, shard=None):
        from torchvision import transforms
        from torchvision.datasets import ImageFolder
        if not Path(root).is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist (expected root/<class>/<image>.JPEG)")
        transform = transforms.Compose([transforms.Resize(round(image_size / 0.875)),
                                        transforms.CenterCrop(image_size), transforms.ToTensor()])
        dataset = ImageFolder(root, transform=transform)
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

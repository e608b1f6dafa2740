"""The ImageNet-style folder path (the paper-scale data route) on a tiny generated folder."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitcnn_utils import data


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """root/{train,val}/<class>/<image>.png: 2 classes, 12 train and 6 val images each, 40 x 48 px RGB."""
    root, rng = tmp_path_factory.mktemp("imagenet"), np.random.default_rng(0)
    for split, per_class in (("train", 12), ("val", 6)):
        for cls in ("n01", "n02"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls}_{i}.png")
    return root


def _count(batches):
    return sum(len(labels) for _, labels in batches)


def test_analysis_batches_read_val_of_a_train_val_root(imagenet_like):
    batches = data.analysis_batches(str(imagenet_like), 12, 8, image_size=32)
    images, labels = next(iter(batches))
    assert images.shape == (8, 3, 32, 32) and images.dtype.is_floating_point
    assert 0 <= images.min() and images.max() <= 1
    assert _count(batches) == 12                              # all of val/ (2 x 6), no image dropped
    direct = data.analysis_batches(str(imagenet_like / "val"), 12, 8, image_size=32)
    assert all((a == b).all() for (a, _), (b, _) in zip(batches, direct))


def test_probe_batches_split_train_and_score_on_val(imagenet_like):
    fit, val, test = data.probe_batches(str(imagenet_like), shots=4, val_per_class=2, n_test=8, batch_size=4,
                                        image_size=32)
    fit_labels = [int(y) for _, labels in fit for y in labels]
    assert sorted(fit_labels) == [0] * 4 + [1] * 4          # 4 shots per class
    assert _count(val) == 4 and _count(test) == 8


def test_small_last_minibatch_is_an_error_not_a_silent_drop(imagenet_like):
    with pytest.raises(ValueError, match="last minibatch of 2"):
        data.analysis_batches(str(imagenet_like), 10, 8, image_size=32)
    with pytest.raises(FileNotFoundError, match="needs train/ and val/"):
        data.probe_batches(str(imagenet_like / "val"), 1, 1, 4, 4)


def test_16_bit_grey_pngs_are_scaled_by_their_range(tmp_path):
    """PIL's convert("RGB") clips 16-bit values: such a PNG used to read as all white (1.0)."""
    folder = tmp_path / "grey16" / "n01"
    folder.mkdir(parents=True)
    for i, value in enumerate((0, 16384, 32768, 65535)):
        Image.fromarray(np.full((40, 48), value, dtype=np.uint16)).save(folder / f"{i}.png")
    assert Image.open(folder / "2.png").mode.startswith("I;16")         # a real 16-bit PNG, as PIL reads it
    images, _ = next(iter(data.analysis_batches(str(tmp_path / "grey16"), 4, 4, image_size=16)))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    per_image = sorted(images.amax((1, 2, 3)).tolist())
    assert per_image == pytest.approx([0, 16384 / 65535, 32768 / 65535, 1], abs=1e-6)
    assert torch.equal(images.amin((1, 2, 3)), images.amax((1, 2, 3)))   # constant images stay constant

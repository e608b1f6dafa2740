"""Fashion-MNIST loading and subsets; the trained zoo (checksums, accuracy); the training loop."""
import math
import shutil

import pytest
import torch

from vitcnn_utils import zoo
from vitcnn_utils.data import (DataNotFoundError, analysis_subset, fraction_subset, load_fashion_mnist,
                               normalize)
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.models import load_model
from vitcnn_utils.train import Recipe, augment, evaluate, train

CHECK_IMAGES = 1000          # the fixed CI-sized test subset (class-balanced, seed 0)


@pytest.fixture(scope="module")
def test_set():
    return load_fashion_mnist("test")


@pytest.fixture(scope="module")
def train_set():
    return load_fashion_mnist("train")


def test_fashion_mnist_splits(train_set, test_set):
    assert train_set.images.shape == (60000, 1, 28, 28) and train_set.images.dtype == torch.uint8
    assert test_set.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(test_set.labels), torch.full((10,), 1000))
    assert abs(normalize(train_set.images[:5000]).mean().item()) < 0.05


def test_fractions_are_nested_stratified_and_seeded(train_set):
    small, large = fraction_subset(train_set, 0.03), fraction_subset(train_set, 0.10)
    assert len(small) == 1800 and len(large) == 6000
    assert set(small.indices.tolist()) <= set(large.indices.tolist())
    assert torch.equal(torch.bincount(small.labels), torch.full((10,), 180))
    assert torch.equal(fraction_subset(train_set, 0.03).indices, small.indices)
    assert not torch.equal(fraction_subset(train_set, 0.03, seed=1).indices, small.indices)
    with pytest.raises(ValueError, match="fraction"):
        fraction_subset(train_set, 0.0)
    with pytest.raises(ValueError, match=r"n must be in \[1, 10000\]"):
        analysis_subset(load_fashion_mnist("test"), 20000)


def test_missing_data_message_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr("vitcnn_utils.data.DEBIAN_DIR", tmp_path / "nothing")
    monkeypatch.setattr("vitcnn_utils.data.Path.home", lambda: tmp_path)
    monkeypatch.delenv("VITCNN_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError) as err:
        load_fashion_mnist("test", download=False)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "VITCNN_DATA_DIR" in message
    assert "torchvision" in message
    # an explicit folder without the files is refused by name (issue 12), never replaced by another copy
    with pytest.raises(DataNotFoundError, match=f"data_dir {tmp_path} holds no t10k-images-idx3-ubyte"):
        load_fashion_mnist("test", data_dir=tmp_path, download=False)


def test_augment_shifts_and_flips():
    img = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    img[:, :, 14, 10] = 255
    out = augment(img, shift=2, flip=True, gen=torch.Generator().manual_seed(0))
    rows, cols = torch.nonzero(out[:, 0] == 255, as_tuple=True)[1:]
    assert out.shape == img.shape and (out == 255).sum() == 64       # the pixel moved, never duplicated
    assert set(rows.tolist()) <= set(range(12, 17)) and len(set(cols.tolist())) > 3
    assert any(c > 14 for c in cols.tolist())                        # some images were flipped


def test_training_reduces_the_loss(train_set, test_set):
    torch.manual_seed(0)
    model = build_vit(embed_dim=32, depth=2, num_heads=2)
    subset = fraction_subset(train_set, 0.02)                         # 1,200 images, 38 steps of 32
    record = train(model, subset, test_set.subset(torch.arange(200)), Recipe(1, batch_size=32, lr=2e-3), seed=0)
    losses = record["losses"]
    assert len(losses) == 38
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.1      # chance level is ln 10 = 2.30
    assert record["history"][0]["test_accuracy"] > 0.2                # chance is 0.1


needs_zoo = pytest.mark.skipif(not zoo.available(), reason="no zoo model trained yet (python -m vitcnn_utils.zoo)")


@needs_zoo
def test_manifest_entries_are_complete():
    entries = zoo.manifest()
    for name, entry in entries.items():
        assert name in zoo.SPECS and entry["arch"] == zoo.SPECS[name].arch
        for key in ("sha256", "recipe", "fraction", "seed", "epochs", "test_accuracy", "train_seconds",
                    "device", "parameters", "history"):
            assert key in entry, f"{name}: manifest entry lacks {key}"
        size = (zoo.ZOO_DIR / entry["file"]).stat().st_size
        assert size <= 20e6


@pytest.mark.parametrize("name", zoo.available())
def test_every_zoo_model_loads_with_verified_checksum(name):
    model = load_model(f"zoo:{name}")
    assert not model.training and model.zoo_entry["sha256"] == zoo.sha256(zoo.ZOO_DIR / model.zoo_entry["file"])
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", [n for n in zoo.available() if zoo.manifest()[n]["fraction"] == 1.0])
def test_full_data_models_reach_their_recorded_accuracy(name, test_set):
    model = zoo.load(name)
    accuracy = evaluate(model, analysis_subset(test_set, CHECK_IMAGES, seed=0))
    recorded = zoo.manifest()[name]["test_accuracy"]
    # the 1,000 images are a subset of the 10,000 the accuracy was recorded on: allow 3 standard errors of a
    # subset mean drawn without replacement (1.2 points at 80% accuracy; a model that loaded wrongly is far off)
    se = math.sqrt(recorded * (1 - recorded) / CHECK_IMAGES * (1 - CHECK_IMAGES / 10_000))
    assert abs(accuracy - recorded) <= 3 * se, (f"{name}: {accuracy:.4f} on {CHECK_IMAGES} images, recorded "
                                                f"{recorded:.4f} (3 SE = {3 * se:.4f})")


FLOORS = {"vit-cls": 0.88, "vit-gap": 0.88, "resnet": 0.91}    # issue 3: test accuracy on all 10,000 images


@pytest.mark.parametrize("name", [n for n in FLOORS if n in zoo.available()])
def test_accuracy_floor(name):
    accuracy = zoo.manifest()[name]["test_accuracy"]
    assert accuracy >= FLOORS[name], f"{name}: {accuracy:.4f} < {FLOORS[name]}"


@needs_zoo
def test_bad_zoo_name_lists_available():
    with pytest.raises(ValueError, match=f"no zoo model named 'vit-huge'; available: .*{zoo.available()[0]}"):
        load_model("zoo:vit-huge")


@needs_zoo
def test_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    name = zoo.available()[0]
    entry = zoo.manifest()[name]
    shutil.copy(zoo.MANIFEST, tmp_path / "manifest.json")
    weights = tmp_path / entry["file"]
    shutil.copy(zoo.ZOO_DIR / entry["file"], weights)
    with open(weights, "r+b") as f:            # flip one byte of the last tensor's data
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "manifest.json")
    with pytest.raises(ValueError, match=f"checksum mismatch for .*{entry['file']}"):
        zoo.load(name)

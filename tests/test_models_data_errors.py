"""Issue 12: no silent wrong answers from data.preprocessor / data, and errors that say what to do.

Float images (what torchvision transforms produce) and uint8 images give the same model output; float images
outside [0, 1] are refused. An explicit data location is used or refused, never replaced. Fashion-MNIST is
28 px: image_size applies to image folders. Errors name the file, folder or hub repo they are about.
"""
import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitcnn_utils import data, zoo
from vitcnn_utils.data import DataNotFoundError, load_fashion_mnist, normalize
from vitcnn_utils.architectures import build_resnet, build_vit
from vitcnn_utils.data import preprocessor
from vitcnn_utils.models import load_model

ROOT = Path(__file__).resolve().parent.parent


# -- 1. uint8 and float [0, 1] images alike; other floats refused ------------------------------------------
def _tiny_zoo_vit():
    torch.manual_seed(0)
    return build_vit(embed_dim=32, depth=2, num_heads=2).eval()


def _tiny_zoo_resnet():
    torch.manual_seed(0)
    return build_resnet(layers=(1, 1, 1, 1), channels=(4, 8, 8, 8)).eval()


def _timm_resnet():
    torch.manual_seed(0)
    return load_model("resnet18", num_classes=3)


MODELS = {"zoo-vit": (_tiny_zoo_vit, 1, 28), "zoo-resnet": (_tiny_zoo_resnet, 1, 28), "timm": (_timm_resnet, 3, 32)}


def _uint8(channels, size, n=4, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", list(MODELS))
def test_uint8_and_float_unit_images_give_the_same_output(kind):
    build, channels, size = MODELS[kind]
    model, images = build(), _uint8(channels, size)
    prep = preprocessor(model)
    with torch.no_grad():
        from_uint8 = model(prep(images))
        from_float = model(prep(images.float() / 255))            # what torchvision's ToTensor() gives
        from_int64 = model(prep(images.long()))                   # integer pixels 0..255, any integer dtype
    assert torch.allclose(from_uint8, from_float, atol=1e-6) and torch.equal(from_uint8, from_int64)
    assert prep(images).std() > 0.5                               # standardised, not a near-constant image


def test_a_trained_zoo_model_reads_float_images_like_uint8():
    if "vit-cls" not in zoo.available():
        pytest.skip("zoo model vit-cls not trained (python -m vitcnn_utils.zoo)")
    model, images = load_model("zoo:vit-cls"), _uint8(1, 28)
    prep = preprocessor(model)
    with torch.no_grad():
        assert torch.allclose(model(prep(images)), model(prep(images / 255.0)), atol=1e-5)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("bad, what", [(lambda x: x.float(), "max 2"),              # 0..255 as floats
                                       (lambda x: normalize(x), "min -"),         # already standardised
                                       (lambda x: torch.full(x.shape, float("nan")), "nan")])
def test_float_images_outside_the_unit_range_are_refused(kind, bad, what):
    build, channels, size = MODELS[kind]
    images = bad(_uint8(channels, size))
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]") as err:
        preprocessor(build())(images)
    assert what in str(err.value) and "uint8" in str(err.value)


def test_normalize_checks_its_input_too():
    images = _uint8(1, 28)
    assert torch.equal(normalize(images), normalize(images.float() / 255))
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        normalize(images.float())
    with pytest.raises(ValueError, match=r"integer images must lie in \[0, 255\]"):
        normalize(images.long() * 4)
    with pytest.raises(TypeError, match="uint8"):
        normalize(images > 100)


# -- 2. data locations: used or refused, never replaced; Fashion-MNIST is 28 px ------------------------------
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fmnist(folder: Path, n: int, fill: int, parts=("images", "labels"), gz=True) -> Path:
    """A Fashion-MNIST look-alike: ``n`` images of constant ``fill`` per split (labels 0..9 cycling)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for images_name, labels_name in data._FILES.values():
        if "images" in parts:
            _write_idx(folder / f"{images_name}{suffix}", np.full((n, 28, 28), fill))
        if "labels" in parts:
            _write_idx(folder / f"{labels_name}{suffix}", np.arange(n) % 10)
    return folder


@pytest.fixture
def default_search(tmp_path, monkeypatch):
    """The default search sees only a complete fake copy (20 images of value 7) in place of the system one."""
    monkeypatch.setattr(data, "DEBIAN_DIR", _fake_fmnist(tmp_path / "system", 20, 7))
    monkeypatch.setattr(data.Path, "home", lambda: tmp_path / "home")
    monkeypatch.delenv("VITCNN_DATA_DIR", raising=False)
    return tmp_path


def test_the_default_search_still_finds_the_system_copy(default_search):
    test = load_fashion_mnist("test", download=False)
    assert len(test) == 20 and (test.images == 7).all()


def test_an_explicit_data_dir_is_used(default_search):
    mine = _fake_fmnist(default_search / "mine", 30, 9, gz=False)
    test = load_fashion_mnist("test", data_dir=mine, download=False)
    assert len(test) == 30 and (test.images == 9).all()


def test_an_explicit_data_dir_that_does_not_exist_is_refused(default_search):
    missing = default_search / "typo"
    with pytest.raises(DataNotFoundError, match=f"data_dir {missing} does not exist"):
        load_fashion_mnist("test", data_dir=missing)


def test_vitcnn_data_dir_pointing_to_an_empty_folder_is_refused(default_search, monkeypatch):
    empty = default_search / "empty"
    empty.mkdir()
    monkeypatch.setenv("VITCNN_DATA_DIR", str(empty))
    with pytest.raises(DataNotFoundError, match=f"VITCNN_DATA_DIR {empty} holds no t10k-images-idx3-ubyte"):
        load_fashion_mnist("test")


def test_images_and_labels_come_from_one_folder(default_search, monkeypatch):
    images_only = _fake_fmnist(default_search / "images-only", 30, 9, parts=("images",))
    with pytest.raises(DataNotFoundError, match=f"{images_only} holds no t10k-labels-idx1-ubyte"):
        load_fashion_mnist("test", data_dir=images_only)
    # in the default search too: an incomplete copy is an error, not a reason to mix in another folder's labels
    monkeypatch.setattr(data, "DEBIAN_DIR", images_only)
    _fake_fmnist(default_search / "home" / ".cache" / "vitcnn", 20, 7)
    with pytest.raises(DataNotFoundError, match=f"{images_only} holds no t10k-labels-idx1-ubyte"):
        load_fashion_mnist("test")


def test_image_size_is_for_image_folders_not_fashion_mnist(default_search):
    with pytest.raises(ValueError, match="Fashion-MNIST images are 28 px; image_size applies to image folders"):
        data.analysis_batches("fashion-mnist", 8, 4, image_size=224)
    with pytest.raises(ValueError, match="Fashion-MNIST images are 28 px; image_size applies to image folders"):
        data.probe_batches("fashion-mnist", 1, 1, 10, 5, image_size=224)
    for size in (None, 28):
        images, _ = next(iter(data.analysis_batches("fashion-mnist", 8, 4, image_size=size)))
        assert images.shape == (4, 1, 28, 28)
    fit, val, test = data.probe_batches("fashion-mnist", 1, 1, 10, 5)         # 1 + 1 of each of 10 classes
    assert [sum(len(y) for _, y in part) for part in (fit, val, test)] == [10, 10, 10]


def test_the_chapters_defaults_leave_image_size_to_the_data():
    """The book runs on Fashion-MNIST by default, so no chapter may default to an image size."""
    from vitcnn_utils.tools.book import CHAPTERS, chapter_parameters
    from vitcnn_utils.tools.cka_heatmaps import DEFAULTS
    for chapter in CHAPTERS:
        params = chapter_parameters(ROOT / "notebooks" / f"{chapter}.ipynb", {})
        if "image_size" in params and params.get("data") == "fashion-mnist":
            assert params["image_size"] is None, chapter
    assert DEFAULTS["data"] != "fashion-mnist" or DEFAULTS["image_size"] is None


# -- 3. errors that name what is wrong ---------------------------------------------------------------------
def test_a_weights_folder_is_called_a_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match=f"weights {tmp_path} is a folder.*model.safetensors"):
        load_model("resnet18", weights=tmp_path)


def test_a_truncated_weights_file_is_named(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(load_model("resnet18", num_classes=3).state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=f"could not read weights file {path}"):
        load_model("resnet18", weights=path, num_classes=3)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_files_are_named(default_search, gz):
    folder = _fake_fmnist(default_search / "cut", 20, 7, gz=gz)
    path = folder / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=f"{path} is truncated or corrupt"):
        load_fashion_mnist("test", data_dir=folder)


@pytest.fixture
def tmp_zoo(tmp_path, monkeypatch):
    """An empty zoo folder in place of the shipped one."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "manifest.json")
    return tmp_path


def test_a_manifest_entry_without_sha256_says_which_key(tmp_zoo):
    arch = zoo.SPECS["vit-cls"].arch
    torch.manual_seed(0)
    save_file(build_vit(**{k: v for k, v in arch.items() if k != "kind"}).state_dict(), tmp_zoo / "vit-cls.safetensors")
    (tmp_zoo / "manifest.json").write_text(json.dumps({"vit-cls": {"arch": arch, "file": "vit-cls.safetensors"}}))
    with pytest.raises(ValueError, match=r"manifest entry 'vit-cls' in .*manifest.json lacks 'sha256'.*"
                                         r"python -m vitcnn_utils.zoo --only vit-cls"):
        load_model("zoo:vit-cls")


def test_a_missing_manifest_is_called_missing(tmp_zoo):
    with pytest.raises(FileNotFoundError, match=f"zoo manifest {tmp_zoo / 'manifest.json'} is missing.*"
                                                r"python -m vitcnn_utils.zoo"):
        load_model("zoo:vit-cls")


@pytest.mark.parametrize("name", ["resnet18", "resnet18.a1_in1k"])
def test_the_offline_hint_names_the_exact_hub_repo(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"hf download timm/resnet18\.a1_in1k model\.safetensors"):
        load_model(name, pretrained=True)


_NO_NETWORK = textwrap.dedent("""
    import json, os, socket, time
    time.sleep = lambda seconds: None      # the hub's retry back-off (1 + 2 + 4 + 8 + 8 s per file) is not tested
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled by the test")
    socket.getaddrinfo = refuse
    socket.socket.connect = lambda self, *a: refuse(*a)
    socket.create_connection = refuse
    from vitcnn_utils.models import load_model
    out = {}
    for case, online in (("default", None), ("VITCNN_ONLINE=1", "1")):
        if online:
            os.environ["VITCNN_ONLINE"] = online
        attempts.clear()
        try:
            load_model("resnet18", pretrained=True)
            message = "no error"
        except RuntimeError as err:
            message = str(err)
        out[case] = {"attempts": list(attempts), "message": message}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def without_network(tmp_path_factory):
    """``load_model("resnet18", pretrained=True)`` in a fresh process whose environment has no HF_HUB_OFFLINE
    (so huggingface_hub starts online) and whose sockets refuse every connection, recording each attempt:
    once with the project's default, once with ``VITCNN_ONLINE=1``."""
    tmp = tmp_path_factory.mktemp("no-network")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VITCNN_ONLINE")}
    env.update(HF_HOME=str(tmp / "hf"), TORCH_HOME=str(tmp / "torch"))
    done = subprocess.run([sys.executable, "-c", _NO_NETWORK], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pretrained_stays_offline_when_hf_hub_offline_is_unset(without_network):
    """The project's default is offline: no connection is attempted (on a machine without network the hub
    client retries each for ~47 s), and the error names the hub repo and says how to go online."""
    out = without_network["default"]
    assert out["attempts"] == [], out
    assert "VITCNN_ONLINE=1" in out["message"] and "hf download timm/resnet18.a1_in1k" in out["message"]


def test_vitcnn_online_opts_in_to_the_hub(without_network):
    out = without_network["VITCNN_ONLINE=1"]
    assert out["attempts"], out                              # it did reach for the hub
    assert "could not fetch pretrained weights for 'resnet18'" in out["message"] and "(online;" in out["message"]


# -- issue 21: wrapped and one-channel timm models, channel counts, dtypes, counts, data locations -----------
def _half_cfg_resnet(**kwargs):
    """A timm ResNet whose config's mean and std are 0.5 (so 0.5 grey normalises to exactly 0)."""
    return load_model("resnet18", num_classes=3, pretrained_cfg_overlay=dict(mean=(0.5,) * 3, std=(0.5,) * 3),
                      **kwargs)


@pytest.mark.parametrize("wrap", [lambda m: m, lambda m: torch.nn.Sequential(m), torch.nn.DataParallel,
                                  lambda m: torch.nn.Sequential(torch.nn.DataParallel(m), torch.nn.Identity())])
def test_the_preprocessor_of_a_wrapped_timm_model_is_the_models(wrap):
    """It used to fall back to ImageNet's mean/std (0.5 became [0.066, 0.196, 0.418] instead of 0)."""
    out = preprocessor(wrap(_half_cfg_resnet()))(torch.full((2, 3, 8, 8), 0.5))
    assert torch.equal(out, torch.zeros_like(out))


def test_a_timm_model_wrapped_elsewhere_is_refused():
    with pytest.raises(ValueError, match=r"preprocessor cannot tell how this Sequential normalises its input: "
                                         r"the model it wraps, '1' \(ResNet\)"):
        preprocessor(torch.nn.Sequential(torch.nn.Identity(), _half_cfg_resnet()))


def test_a_one_channel_timm_model_gets_one_channel():
    """``in_chans=1``: grey images used to come out with 3 channels ("expected 1 channels, got 3")."""
    model = _half_cfg_resnet(in_chans=1)
    prep = preprocessor(model)
    x = prep(_uint8(1, 32))
    assert x.shape == (4, 1, 32, 32) and torch.allclose(x, _uint8(1, 32) / 255 * 2 - 1)
    assert model(x).shape == (4, 3)
    with pytest.raises(ValueError, match="images have 3 channels but the model takes 1: convert them to grey"):
        prep(_uint8(3, 32))


def test_rgba_images_are_refused_with_a_fix():
    with pytest.raises(ValueError, match=r"images have 4 channels but the model takes 3: drop the alpha channel "
                                         r"\(images\[:, :3\]\)"):
        preprocessor(_timm_resnet())(_uint8(4, 32))
    grey = preprocessor(_half_cfg_resnet())(_uint8(1, 32))         # grey images into an RGB model: repeated
    assert grey.shape == (4, 3, 32, 32) and torch.equal(grey[:, 0], grey[:, 2])


def test_to_unit_float_takes_uint16_and_names_numpy():
    images = _uint8(1, 8)
    assert torch.equal(data.to_unit_float(images.to(torch.uint16)), data.to_unit_float(images))
    with pytest.raises(ValueError, match=r"integer images must lie in \[0, 255\].*16-bit images: images / 65535"):
        data.to_unit_float(torch.full((1, 1, 2, 2), 40000, dtype=torch.uint16))
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor .*numpy.ndarray: wrap it with "
                                        r"torch.from_numpy"):
        data.to_unit_float(images.numpy())


@pytest.mark.parametrize("call, name, value", [
    (lambda: data.analysis_batches("fashion-mnist", 100.0, 10), "n_images", "100.0"),
    (lambda: data.analysis_batches("fashion-mnist", "100", 10), "n_images", "'100'"),
    (lambda: data.analysis_batches("fashion-mnist", True, 10), "n_images", "True"),
    (lambda: data.analysis_batches("fashion-mnist", 20, 10.0), "batch_size", "10.0"),
    (lambda: data.probe_batches("fashion-mnist", 1.0, 1, 10, 5), "shots", "1.0"),
    (lambda: data.probe_batches("fashion-mnist", 1, 1, "10", 5), "n_test", "'10'"),
    (lambda: data.probe_batches("fashion-mnist", 1, 1, 10, 5.0), "batch_size", "5.0"),
    (lambda: data.batches(load_fashion_mnist("test"), 10.0), "batch_size", "10.0"),
    (lambda: data.analysis_subset(load_fashion_mnist("test"), 10.0), "n", "10.0")])
def test_counts_must_be_ints(default_search, call, name, value):
    with pytest.raises(TypeError, match=f"{name} must be a whole number \\(an int\\), got {value}"):
        call()


def test_probe_batches_refuse_more_images_per_class_than_there_are(default_search):
    """The fake split has 2 images per class: shots + val_per_class = 3 used to give 10 held-out images, not 20."""
    fit, val, _ = data.probe_batches("fashion-mnist", 1, 1, 10, 5)
    assert [sum(len(y) for _, y in part) for part in (fit, val)] == [10, 10]
    for shots, val_per_class in ((1, 2), (2, 1), (6000, 20)):
        with pytest.raises(ValueError, match=r"more than class 0 has \(2\): the maximum is shots \+ val_per_class "
                                             r"= 2, e.g. shots=1, val_per_class=1"):
            data.probe_batches("fashion-mnist", shots, val_per_class, 10, 5)


def test_probe_sets_hold_exactly_shots_per_class_and_keep_the_balanced_order():
    """Unequal classes used to get unequal fit sets; equal ones keep the slices of stratified_order."""
    labels = torch.tensor([0] * 12 + [1] * 4 + [2] * 8)
    fit, val = data._fit_val_indices(labels, 2, 1, seed=0)
    assert labels[fit].bincount().tolist() == [2, 2, 2] and labels[val].bincount().tolist() == [1, 1, 1]
    assert not set(fit.tolist()) & set(val.tolist())
    balanced = torch.arange(60) % 10
    order = data.stratified_order(balanced, seed=3)
    fit, val = data._fit_val_indices(balanced, 3, 2, seed=3)
    assert torch.equal(fit, order[:30]) and torch.equal(val, order[30:50])


def test_a_data_dir_that_is_a_file_is_called_a_file(default_search):
    path = default_search / "system" / "t10k-images-idx3-ubyte.gz"
    with pytest.raises(DataNotFoundError, match=f"data_dir {path} is a file, not a folder: point it at the folder "
                                                f"holding the Fashion-MNIST IDX files \\(e.g. {path.parent}\\)"):
        load_fashion_mnist("test", data_dir=path)

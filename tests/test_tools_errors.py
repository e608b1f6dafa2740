"""The command-line tools stop with one clear line on a bad parameter file or checkpoint: cka_heatmaps refuses
unknown names and wrong types and reports the file NumPy wrote; the book runner checks types before a kernel
starts; the zoo trainer names a truncated checkpoint and says that deleting it restarts the model."""
import re

import pytest
import torch

from vitcnn_utils import train as vtrain
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.data import ImageSet
from vitcnn_utils.tools import book, cka_heatmaps
from vitcnn_utils.train import CheckpointError, Recipe


def _file(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


def _one_line(exc) -> str:
    message = str(exc.value)
    assert exc.value.code != 0 and "\n" not in message, message
    return message


def test_cka_heatmaps_refuses_misspelt_names_listing_the_valid_ones(tmp_path):
    path = _file(tmp_path, "n_image: 16\nbatchsize: 8\n")
    with pytest.raises(SystemExit) as exc:
        cka_heatmaps._arguments(["-f", path])
    message = _one_line(exc)
    assert message.startswith(f"{path}: batchsize, n_image are not parameters of cka_heatmaps")
    assert "did you mean n_images?" in message and "did you mean batch_size?" in message
    assert all(key in message for key in cka_heatmaps.DEFAULTS)


def test_cka_heatmaps_ignores_other_chapter_parameters(tmp_path):
    params, _ = cka_heatmaps._arguments(["-f", _file(tmp_path, "n_images: 16\nn_draws: 5\nuse_cache: false\n"
                                                               "data_dir: null\nimage_size: null\n")])
    assert params["n_images"] == 16 and "n_draws" not in params


def test_cka_heatmaps_takes_the_gram_precision_from_the_file_unless_the_flag_says_otherwise(tmp_path):
    path = _file(tmp_path, "gram_dtype: float32\n")
    assert cka_heatmaps._arguments([])[0]["gram_dtype"] == "float64"
    assert cka_heatmaps._arguments(["-f", path])[0]["gram_dtype"] == "float32"
    assert cka_heatmaps._arguments(["-f", path, "--gram-dtype", "float64"])[0]["gram_dtype"] == "float64"
    with pytest.raises(SystemExit) as exc:
        cka_heatmaps._arguments(["-f", _file(tmp_path, "gram_dtype: half\n")])
    assert _one_line(exc).endswith("gram_dtype must be one of float64, float32, got 'half'")


@pytest.mark.parametrize("text, says", [
    ("- n_images: 16\n", "must be a YAML mapping"),
    ('n_images: "abc"\n', "n_images is a string ('abc') but takes a whole number"),
    ("n_images: [16]\n", "n_images is a list ([16]) but takes a whole number"),
    ("n_images: 16.0\n", "n_images is a decimal number (16.0) but takes a whole number"),
    ("batch_size: true\n", "batch_size is a boolean (True) but takes a whole number"),
    ("image_size: 2.5\n", "image_size is a decimal number (2.5) but takes a whole number"),
    ("weights: [a.safetensors]\n", "weights is a list"),
    ("pretrained: 1\n", "pretrained is a whole number (1) but takes true or false"),
])
def test_cka_heatmaps_bad_values_are_one_line(tmp_path, text, says):
    path = _file(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        cka_heatmaps._arguments(["-f", path])
    message = _one_line(exc)
    assert message.startswith(f"{path}: ") and says in message


def test_cka_heatmaps_reports_the_file_numpy_wrote(tmp_path, capsys):
    out = tmp_path / "results" / "heat"
    summary = cka_heatmaps.main(["--vit", "arch:vit-cls", "--resnet", "arch:resnet", "--n-images", "16",
                                 "--batch-size", "8", "--device", "cpu", "--out", str(out)])
    written = tmp_path / "results" / "heat.npz"
    assert written.is_file() and not out.exists()
    assert summary["out"] == str(written)
    assert f"wrote {written}" in capsys.readouterr().out


def test_the_book_checks_parameter_types_before_a_kernel_starts(tmp_path, monkeypatch):
    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started")
    monkeypatch.setattr(book, "execute_notebook", no_kernel)
    path = _file(tmp_path, 'n_images: "abc"\n')
    with pytest.raises(SystemExit) as exc:
        book.main(["-c", "representation_structure", "-f", path, "-o", str(tmp_path / "out"), "--no-build"])
    message = _one_line(exc)
    assert message.startswith(f"{path}: n_images is a string ('abc') but takes a whole number")
    assert "`n_images: 2048`" in message and "representation_structure" in message
    for params, says in (({"n_images": 16.0}, "n_images is a decimal number"), ({"seed": [1]}, "seed is a list"),
                         ({"use_cache": "no"}, "use_cache is a string ('no') but takes true or false"),
                         ({"vit_fractions": ["zoo:vit-cls-f03"]}, "vit_fractions is a list")):
        with pytest.raises(SystemExit, match=re.escape(f"data_scale: {says}")):
            book.run_chapter("data_scale", params, tmp_path / "out", force=True)
    assert not (tmp_path / "out").exists()


def test_the_book_accepts_the_types_its_chapters_take():
    assert book.wrong_parameter_types(book.CHAPTERS, {
        "n_images": 16, "vit_control": None, "vit_seed": None, "data_dir": "/data", "image_size": 224,
        "weights": None, "vit_fractions": {"3%": "zoo:vit-cls-f03"}, "pretrained": True,
        "token_positions": [[0, 0]], "ablation_results": "x.json"}) == []
    assert book.parameter_type_error("lr", 1, 0.5) is None                 # a whole number is a number


def _tiny_run(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(8) % 2, torch.arange(8))
    model = build_vit(embed_dim=16, depth=1, num_heads=2, num_classes=2)
    return model, data, Recipe(2, batch_size=4), tmp_path / "ckpt" / "model.pt"


def test_a_truncated_checkpoint_is_named_with_the_fix(tmp_path):
    model, data, recipe, ckpt = _tiny_run(tmp_path)
    vtrain.train(model, data, data, Recipe(1, batch_size=4), seed=0, checkpoint=ckpt)
    whole = ckpt.read_bytes()
    for cut in (0, 10, len(whole) // 2, len(whole) - 10):
        ckpt.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError) as exc:
            vtrain.train(model, data, data, Recipe(1, batch_size=4), seed=0, checkpoint=ckpt)
        message = str(exc.value)
        assert f"checkpoint {ckpt} is truncated or corrupt" in message and "delete it" in message, message
        assert "\n" not in message


def test_the_zoo_trainer_names_a_truncated_checkpoint(tmp_path, monkeypatch):
    from vitcnn_utils.zoo import __main__ as zoo_main
    model, data, _, _ = _tiny_run(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("the zoo must not be written by this test")
    monkeypatch.setattr(zoo_main, "save_file", never)
    monkeypatch.setattr(zoo_main, "load_fashion_mnist", lambda split, data_dir=None: data)
    monkeypatch.setattr(zoo_main, "is_current", lambda name: False)
    monkeypatch.setattr(zoo_main, "fraction_subset", lambda d, fraction, seed=0: d)
    ckpt = tmp_path / "ckpts" / "vit-cls.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit) as exc:
        zoo_main.main(["--only", "vit-cls", "--device", "cpu", "--checkpoints", str(ckpt.parent)])
    message = _one_line(exc)
    assert message.startswith(f"vit-cls: checkpoint {ckpt} is truncated or corrupt")
    assert "delete it to train this model from the start" in message

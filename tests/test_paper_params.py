"""The shipped paper-scale parameter files (params/paper/*.yaml) name real timm models with public weights,
layers those architectures have, and only parameters their chapter takes. They cannot run here (no weights, no
ImageNet, no GPU); the architectures are built with random weights on the meta device."""


import pytest
import timm
import torch
import yaml

from vitcnn_utils.tools import book
from vitcnn_utils.models import load_named

PAPER = book.ROOT / "params" / "paper"
CHAPTERS = book.MEASURING
LAYER_KEYS = {"vit": ["vit_layer", "vit_erf_layers"], "resnet": ["resnet_layer", "resnet_low_layers", "resnet_erf_layers"]}


def _load(chapter):
    return yaml.safe_load((PAPER / f"{chapter}.yaml").read_text())


def _model_names(params):
    names = [params[k] for k in ("vit", "vit_small_data", "vit_gap", "resnet") if k in params]
    names += params.get("vit_no_skip", [])
    for key in ("vit_fractions", "resnet_fractions"):
        names += list(params.get(key, {}).values())
    return names


def test_every_analysis_chapter_has_a_paper_file():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == sorted(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_paper_file_keys_are_chapter_parameters(chapter):
    params = _load(chapter)
    assert book.unknown_parameters([chapter], params) == []
    assert params["image_size"] == 224 and params["device"] == "cuda"
    assert params["n_images"] >= 5000 and params["batch_size"] >= 250


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_paper_models_have_public_weights_and_a_weights_entry(chapter):
    params = _load(chapter)
    pretrained = set(timm.list_pretrained())
    names = _model_names(params)
    assert names and all(name in pretrained for name in names), [n for n in names if n not in pretrained]
    assert set(params["weights"]) == set(names)              # every model reads a local file, no random weights


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_paper_layers_exist_in_the_architectures(chapter):
    params = _load(chapter)
    for family, keys in LAYER_KEYS.items():
        wanted = [layer for k in keys if k in params
                  for layer in ([params[k]] if isinstance(params[k], str) else params[k])]
        if not wanted:
            continue
        names = [params[family]] + ([params["vit_gap"]] if family == "vit" and "vit_gap" in params else [])
        for name in names:
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
            modules = dict(model.named_modules())
            assert [layer for layer in wanted if layer not in modules] == [], name


def test_unknown_parameter_is_refused_with_its_name(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("n_imgaes: 10\n")
    with pytest.raises(SystemExit, match="n_imgaes is not a parameter"):
        book.main(["-c", "spatial", "-f", str(path), "--no-build"])


def test_load_named_uses_the_weights_table_and_warns_on_random_weights(tmp_path):
    with pytest.warns(UserWarning, match="random weights"):
        model = load_named("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    again = load_named("resnet18", weights={"resnet18": str(path)})
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="ships its own weights"):
        load_named("arch:resnet", weights={"arch:resnet": str(path)})

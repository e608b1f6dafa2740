"""Seed twins: the symmetric name swap, the swapped chapter arguments, and what happens when twins are missing."""
import pytest

from vitcnn_utils import seeds, zoo


def test_twin_swaps_both_ways_and_refuses_models_without_one():
    assert seeds.twin("zoo:vit-cls") == "zoo:vit-cls-s1"
    assert seeds.twin("zoo:vit-cls-s1") == "zoo:vit-cls"
    assert seeds.twin("zoo:resnet-f03") == "zoo:resnet-f03-s1"
    for name in ("arch:vit-cls", "vit_base_patch16_224", None):
        with pytest.raises(ValueError, match="seed_twins=False"):
            seeds.twin(name)
    with pytest.raises(ValueError, match="no seed twin"):
        seeds.twin("zoo:nonexistent")


def test_twin_arguments_swap_names_lists_and_mappings_and_leave_the_rest():
    args = {"vit": "zoo:vit-cls", "vit_seed": "zoo:vit-cls-s1", "vit_no_skip": ["zoo:vit-cls-noskip1"],
            "vit_fractions": {"3%": "zoo:vit-cls-f03"}, "vit_matched": None, "data": "fashion-mnist", "n_draws": 5}
    out = seeds.twin_arguments(args, ("vit", "vit_seed", "vit_no_skip", "vit_fractions", "vit_matched"))
    assert out == {**args, "vit": "zoo:vit-cls-s1", "vit_seed": "zoo:vit-cls", "vit_no_skip": ["zoo:vit-cls-noskip1-s1"],
                   "vit_fractions": {"3%": "zoo:vit-cls-f03-s1"}}
    assert args["vit"] == "zoo:vit-cls"                                  # the caller's arguments are left alone


def test_missing_twins_give_no_replicate_a_clear_error_on_request_and_a_note(monkeypatch):
    monkeypatch.setattr(zoo, "manifest", lambda: {"vit-cls": {}, "vit-cls-s1": {}, "resnet": {}})
    args, keys = {"vit": "zoo:vit-cls", "resnet": "zoo:resnet"}, ("vit", "resnet")
    calls = []
    assert seeds.missing_twins(args, keys) == ["resnet-s1"]
    assert seeds.replicate(lambda **kw: calls.append(kw), args, keys) == [] and not calls
    with pytest.raises(ValueError, match="python -m vitcnn_utils.zoo --only resnet-s1"):
        seeds.replicate(lambda **kw: kw, args, keys, require=True)
    assert "`resnet-s1`" in seeds.note(args, keys, True) and "image draws only" in seeds.note(args, keys, True)
    assert "seed_twins" in seeds.note(args, keys, False)
    monkeypatch.setattr(zoo, "manifest", lambda: dict.fromkeys(["vit-cls", "vit-cls-s1", "resnet", "resnet-s1"], {}))
    assert seeds.replicate(lambda **kw: kw, args, keys) == [{"vit": "zoo:vit-cls-s1", "resnet": "zoo:resnet-s1"}]
    assert "training seeds and image draws" in seeds.note(args, keys, True)

"""Chapter module vitcnn_utils.chapters.spatial: run() on tiny models records every schema field as a list over
draws (counts as ints), and draw 0 is the plain library call on the same images."""
import pytest
import torch

from vitcnn_utils import cache, localisation
from vitcnn_utils import measure
from vitcnn_utils import data as vdata
from vitcnn_utils.chapters import spatial

SIZES = dict(n_images=16, batch_size=8, shots=2, val_per_class=2, n_test=16)
LAYERS = {"ViT-CLS": "blocks.1", "ViT-GAP": "blocks.1", "ResNet": "layer4.0"}


@pytest.fixture(scope="module")
def result(tiny_vit, tiny_vit_gap, tiny_resnet):
    return spatial.run(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_layer="blocks.1",
                       resnet_layer="layer4.0", token_positions=[(0, 0), (3, 3)], n_draws=2, use_cache=False,
                       **SIZES)


def test_record_has_every_schema_field_over_draws(result):
    rec = result.to_record()
    assert rec["n_draws"] == 2 and rec["seeds"] == [0, 1]
    for key in ("vit_cls", "vit_gap", "resnet"):
        counts = rec[key]["interior_own_patch_count"]
        assert len(counts) == 2 and all(type(c) is int and 0 <= c <= 25 for c in counts)
        assert type(rec[key]["interior_tokens"]) is int and rec[key]["interior_tokens"] == 25   # 5x5 of a 7x7 grid
    for key in ("vit_cls_tokens", "vit_gap_tokens", "resnet_tokens", "vit_cls_cls", "vit_gap_gap"):
        assert len(rec[key]) == 2 and all(isinstance(v, float) and 0 <= v <= 1 for v in rec[key])
    assert result.position_maps("ViT-CLS").shape == (2, 7, 7)
    assert result.probe_curves["ResNet"]["tokens"].shape == (2, 4)         # draws x the ResNet's 4 units


def test_draw_0_is_the_plain_library_call(result, tiny_vit, tiny_vit_gap, tiny_resnet):
    models = {"ViT-CLS": tiny_vit, "ViT-GAP": tiny_vit_gap, "ResNet": tiny_resnet}
    batches = vdata.analysis_batches("fashion-mnist", SIZES["n_images"], SIZES["batch_size"], seed=0)
    fit, val, test = vdata.probe_batches("fashion-mnist", SIZES["shots"], SIZES["val_per_class"], SIZES["n_test"],
                                         SIZES["batch_size"], seed=0)
    rec = result.to_record()
    for label, model in models.items():
        g = measure.token_geometry(model, LAYERS[label], batches)
        matrix = measure.token_patch_cka(model, batches, LAYERS[label], g["patch_size"], g["grid"],
                                              g["num_prefix_tokens"])
        assert torch.equal(result.token_patch_cka[label][0], matrix.double())
        counts = localisation.own_patch_counts(matrix, g["grid"])
        assert rec[spatial.KEYS[label]]["interior_own_patch_count"][0] == counts["interior_own_patch_count"]
        curves = spatial.probe_curves(measure.spatial_probes(model, fit, val, test), g["num_prefix_tokens"])
        for kind, values in curves.items():
            assert torch.equal(result.probe_curves[label][kind][0], values.double()), (label, kind)
    assert rec["vit_cls_cls"][0] == result.probe_curves["ViT-CLS"]["cls"][0, -1].item()
    # the second draw sees other images
    assert not torch.equal(result.token_patch_cka["ViT-CLS"][0], result.token_patch_cka["ViT-CLS"][1])


def test_own_patch_counts_agree_with_the_summary_fractions():
    gen = torch.Generator().manual_seed(0)
    matrix = torch.rand(16, 16, generator=gen, dtype=torch.float64)
    matrix[5, 5] = 2.0                      # an interior token that picks its own patch
    matrix[6, 6] = float("nan")             # an interior token whose own-patch CKA is undefined: never a hit
    counts = localisation.own_patch_counts(matrix, (4, 4))
    summary = spatial.localisation_summary(matrix, (4, 4))
    assert counts["interior_tokens"] == 4 and counts["interior_defined"] == 3 and counts["tokens"] == 16
    assert counts["interior_own_patch_count"] / counts["interior_defined"] == summary["interior_own_patch_is_best"]
    assert counts["own_patch_count"] / counts["defined"] == summary["own_patch_is_best"]
    with pytest.raises(ValueError, match="does not match"):
        localisation.own_patch_counts(matrix, (3, 3))


def test_draws_are_cached(tiny_vit, tiny_vit_gap, tiny_resnet, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    kw = dict(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_layer="blocks.1", n_draws=1, **SIZES)
    first = spatial.run(**kw)
    assert len(list(tmp_path.glob("token-patch-cka-*.pt"))) == 3 and len(list(tmp_path.glob("spatial-probes-*.pt"))) == 3
    assert spatial.run(**kw).to_record() == first.to_record()

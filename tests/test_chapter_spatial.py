"""Chapter module vitcnn_utils.chapters.spatial: run() on tiny models records every schema field as a list over
draws (counts as ints), draw 0 is the plain library call on the same images, and second training seeds are
measured like the models they replicate."""
import pytest
import torch

from vitcnn_utils import evidence
from vitcnn_utils import cache, findings, localisation
from vitcnn_utils import measure
from vitcnn_utils import data as vdata
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.chapters import spatial

SIZES = dict(n_images=16, batch_size=8, shots=2, val_per_class=2, n_test=16)
LAYERS = {"ViT-CLS": "blocks.1", "ViT-GAP": "blocks.1", "ResNet": "layer4.0"}


@pytest.fixture(scope="module")
def tiny_vit_seed1():
    """The tiny CLS ViT's architecture with another initialisation (a stand-in for a second training seed)."""
    torch.manual_seed(10)
    return build_vit(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, pool="cls").eval()


@pytest.fixture(scope="module")
def result(tiny_vit, tiny_vit_gap, tiny_resnet, tiny_vit_seed1):
    # the GAP model stands in as its own second seed: its seed-to-seed differences must be exactly zero
    return spatial.run(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_seed=tiny_vit_seed1,
                       vit_gap_seed=tiny_vit_gap, vit_layer="blocks.1", resnet_layer="layer4.0",
                       token_positions=[(0, 0), (3, 3)], n_draws=2, use_cache=False, **SIZES)


def test_record_has_every_schema_field_over_draws(result):
    rec = result.to_record()
    typed = spatial.Record.from_json(evidence._plain(rec), "chapter")   # what its findings' rules read is there, typed
    assert typed.seeds == rec["seeds"] and typed.replicates == ()
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


def test_second_seeds_are_measured_like_their_models(result, tiny_vit_seed1):
    rec = result.to_record()["seed_baseline"]
    assert set(rec) == {"vit_cls", "vit_gap"} and result.has_seeds
    assert rec["vit_gap"]["interior_own_patch_count"] == result.interior_count("ViT-GAP")
    # the last block probed alone gives the last entry of the every-block probes (each probe chooses its own λ)
    assert rec["vit_gap"]["tokens"] == result.last("ViT-GAP", "tokens")
    assert rec["vit_gap"]["gap"] == result.last("ViT-GAP", "gap")
    assert result.seed_differences("ViT-GAP", "count") == [0, 0]
    assert result.seed_differences("ViT-GAP", "tokens") == [0.0, 0.0]
    assert all(type(c) is int for c in rec["vit_cls"]["interior_own_patch_count"])
    # the CLS seed: its own model, draw 0 on draw 0's images
    batches = vdata.analysis_batches("fashion-mnist", SIZES["n_images"], SIZES["batch_size"], seed=0)
    g = measure.token_geometry(tiny_vit_seed1, "blocks.1", batches)
    matrix = measure.token_patch_cka(tiny_vit_seed1, batches, "blocks.1", g["patch_size"], g["grid"],
                                     g["num_prefix_tokens"])
    assert rec["vit_cls"]["interior_own_patch_count"][0] == \
        localisation.own_patch_counts(matrix, g["grid"])["interior_own_patch_count"]
    assert set(rec["vit_cls"]) == {"model", "interior_own_patch_count", *result.probe_curves["ViT-CLS"]}   # cls, spatial_gap, tokens
    nums = spatial.numbers([result])        # one training seed: the interval over its draws
    assert nums["sp_vit_gap_interior"] == (findings.interval([result.interior_count("ViT-GAP")]).text(1)
                                           + f" of {result.interior_tokens('ViT-GAP')}")
    assert nums["sp_vit_cls_cls"] == findings.interval([result.last("ViT-CLS", "cls")]).text(1, 100, "%")
    assert all(isinstance(v, str) for v in nums.values())
    others = result.interior_count("ViT-GAP") + result.interior_count("ResNet") + rec["vit_gap"]["interior_own_patch_count"]
    assert result.criterion_level() == max(others) + 5                     # 20 points of 25 interior tokens
    # the CLS seed's last-block probes are the library's, on draw 1's probe images too
    for draw in (0, 1):
        fit, val, test = vdata.probe_batches("fashion-mnist", SIZES["shots"], SIZES["val_per_class"], SIZES["n_test"],
                                             SIZES["batch_size"], seed=draw)
        curves = spatial.probe_curves(measure.spatial_probes(tiny_vit_seed1, fit, val, test), 1)
        assert rec["vit_cls"]["tokens"][draw] == curves["tokens"][-1].item()
        assert rec["vit_cls"]["cls"][draw] == curves["cls"][-1].item()


def test_without_seeds_the_baseline_is_recorded_as_absent(tiny_vit, tiny_vit_gap, tiny_resnet):
    r = spatial.run(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_seed=None, vit_gap_seed=None,
                    vit_layer="blocks.1", n_draws=1, use_cache=False, **SIZES)
    assert r.to_record()["seed_baseline"] is None and not r.has_seeds
    assert spatial.numbers([r])["sp_runs"] == "1 training seed × 1 draw"


def test_a_second_seed_of_another_architecture_is_refused(tiny_vit, tiny_vit_gap, tiny_resnet):
    other = build_vit(patch_size=7, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, pool="cls").eval()   # 4x4 grid
    with pytest.raises(ValueError, match="second seed of ViT-CLS .* another token geometry at blocks.1"):
        spatial.run(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_seed=other, vit_gap_seed=None,
                    vit_layer="blocks.1", n_draws=1, use_cache=False, **SIZES)


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
    kw = dict(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_seed=None, vit_gap_seed=None,
              vit_layer="blocks.1", n_draws=1, **SIZES)
    first = spatial.run(**kw)
    assert len(list(tmp_path.glob("token_patch_cka-*.pt"))) == 3 and len(list(tmp_path.glob("spatial_probes-*.pt"))) == 3
    assert spatial.run(**kw).to_record() == first.to_record()
    # the CLS model as its own "second seed": its token-patch CKA is the same call as the CLS model's (reused), its
    # last-block probe a call of its own (one more entry), and the seed differences exactly zero
    seeded = spatial.run(**{**kw, "vit_seed": tiny_vit})
    assert len(list(tmp_path.glob("token_patch_cka-*.pt"))) == 3 and len(list(tmp_path.glob("spatial_probes-*.pt"))) == 4
    assert spatial.run(**{**kw, "vit_seed": tiny_vit}).to_record() == seeded.to_record()
    assert seeded.seed_differences("ViT-CLS", "count") == [0] and seeded.seed_differences("ViT-CLS", "tokens") == [0.0]


def test_gram_dtype_reaches_every_cka(tiny_vit, tiny_vit_gap, tiny_resnet, tiny_vit_seed1, gram_dtypes):
    spatial.run(vit=tiny_vit, vit_gap=tiny_vit_gap, resnet=tiny_resnet, vit_seed=tiny_vit_seed1, vit_gap_seed=None,
                vit_layer="blocks.1", resnet_layer="layer4.0", token_positions=[(0, 0)], n_draws=1, use_cache=False,
                gram_dtype="float32", **SIZES)
    assert gram_dtypes and set(gram_dtypes) == {torch.float32}

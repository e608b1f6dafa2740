"""vitcnn_utils.chapters.representation_structure: every field of the results schema, one value per draw, and
draw 0 equal to the plain library calls on seed 0's images (block outputs from a separate capture)."""
import pytest
import torch

from vitcnn_utils import evidence
from vitcnn_utils import cka, findings
from vitcnn_utils import measure
from vitcnn_utils.chapters import representation_structure as rs
from vitcnn_utils.chapters.params import draws
from vitcnn_utils.data import analysis_batches
from vitcnn_utils.hooks import block_outputs

N_DRAWS, N_IMAGES, BATCH = 2, 16, 8
SCHEMA = {"n_draws", "n_images", "vit_low_high", "resnet_low_high", "vit_low_high_blocks", "resnet_low_high_blocks",
          "vit_lowest_quarter_best_in_resnet_lower_half_count", "vit_lowest_quarter_layers", "max_cka_vit_last_third"}
PER_DRAW = SCHEMA - {"n_draws", "n_images", "vit_lowest_quarter_layers"}


def test_record_fields_and_draw_zero(tiny_vit, tiny_resnet):
    result = rs.run(vit=tiny_vit, resnet=tiny_resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=N_DRAWS, use_cache=False,
                    vit_twin=None, resnet_twin=None)
    rec = result.to_record()
    typed = rs.Record.from_json(evidence._plain(rec), "chapter")   # what its findings' rules read is there, typed
    assert typed.seeds == rec["seeds"] and typed.replicates == ()
    assert SCHEMA <= set(rec)
    assert rec["n_draws"] == N_DRAWS and rec["n_images"] == N_IMAGES and result.seeds == [0, 1]
    for field in PER_DRAW:
        assert isinstance(rec[field], list) and len(rec[field]) == N_DRAWS, field
    assert all(type(c) is int for c in rec["vit_lowest_quarter_best_in_resnet_lower_half_count"])
    assert type(rec["vit_lowest_quarter_layers"]) is int

    models = {"ViT": tiny_vit, "ResNet": tiny_resnet}
    heatmaps = measure.model_heatmaps(models, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=0), progress=False)
    vv, rr, cross = heatmaps["ViT", "ViT"], heatmaps["ResNet", "ResNet"], heatmaps["ResNet", "ViT"]
    n_res, n_vit = cross.shape
    assert rec["vit_layers"] == n_vit == 1 + 6 * 2 and rec["resnet_layers"] == n_res
    assert rec["vit_low_high"][0] == cka.band_mean(vv, (0, 0.25), (0.75, 1.0))
    assert rec["resnet_low_high"][0] == cka.band_mean(rr, (0, 0.25), (0.75, 1.0))
    quarter = max(1, round(n_vit / 4))
    match = cka.best_match(cross)
    assert rec["vit_lowest_quarter_layers"] == quarter == 3
    assert rec["vit_lowest_quarter_best_in_resnet_lower_half_count"][0] == sum(
        int(match[j]) < n_res // 2 for j in range(quarter))
    assert rec["max_cka_vit_last_third"][0] == cka.nanmax(cross[:, round(2 * n_vit / 3):])
    assert torch.equal(result.within["ViT"][0], vv.double()) and torch.equal(result.cross[0], cross.double())

    # residual stream only: a separate capture of the block outputs gives the same CKA values
    blocks = measure.model_heatmaps(models, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=0),
                                layers={m: block_outputs(models[m]) for m in models}, progress=False)
    assert blocks.names["ViT"] == ["blocks.0", "blocks.1"] == result.block_names["ViT"]
    for label, field in (("ViT", "vit_low_high_blocks"), ("ResNet", "resnet_low_high_blocks")):
        expected = cka.band_mean(blocks[label, label], (0, 0.25), (0.75, 1.0))
        assert abs(rec[field][0] - expected) < 1e-9

    # draw 1 is seed 1's images
    other = measure.model_heatmaps(models, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=1), progress=False)
    assert rec["vit_low_high"][1] == cka.band_mean(other["ViT", "ViT"], (0, 0.25), (0.75, 1.0))
    assert rec["vit_low_high"][1] != rec["vit_low_high"][0]

    # the text quotes the spreads, and the findings rules accept the record
    nums = rs.numbers([result])       # one training seed: the mean over draws, then its 95% interval
    for key, field in (("rs_vit_low_high", "vit_low_high"), ("rs_max_last_third", "max_cka_vit_last_third")):
        mean = sum(rec[field]) / len(rec[field])
        assert nums[key] == findings.interval([rec[field]]).text() and nums[key].startswith(f"{mean:.2f} [")
    assert nums["rs_runs"] == "1 training seed × 2 draws" and all(isinstance(v, str) for v in nums.values())
    rows = [r for r in findings.table({"representation_structure": findings._plain(rec)})
            if r["chapter"] == "representation_structure"]
    assert [r["finding"] for r in rows] == [1, 2] and all(r["verdict"] != findings.NOT_MEASURED for r in rows)


# -- baselines: random initialisation and the seed twins ---------------------------------------------------------
TINY_VIT = {"kind": "vit", "embed_dim": 32, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0, "pool": "cls"}
TINY_RESNET = {"kind": "resnet", "layers": [1, 1, 1, 1], "channels": [4, 8, 8, 8]}


def _zoo_like(arch, seed):
    """A tiny model standing in for a trained zoo model: it carries a manifest entry with its architecture."""
    torch.manual_seed(seed)
    model = rs.build_architecture(arch).eval()
    with torch.no_grad():      # "trained": no zero-initialised batch norm (timm's init), so no constant layer
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    model.zoo_entry = {"arch": arch, "sha256": f"stand-in-{seed}"}
    return model


def test_init_baseline_and_twin_cka(tmp_path, monkeypatch):
    import json
    import warnings

    from vitcnn_utils import cache, plotting
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    vit, resnet = _zoo_like(TINY_VIT, 10), _zoo_like(TINY_RESNET, 11)
    vit_twin, resnet_twin = _zoo_like(TINY_VIT, 12), _zoo_like(TINY_RESNET, 13)
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():        # the untrained ResNet's constant layers are expected: no warning
        warnings.simplefilter("error")
        result = rs.run(vit=vit, resnet=resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=1, vit_twin=vit_twin,
                        resnet_twin=resnet_twin, init_seeds=(0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)          # the init seeds did not move the global RNG
    rec = result.to_record()
    json.dumps(findings._plain(rec))                                    # recordable

    # random initialisation: per init seed, the chapter's F1/F2 numbers of the architectures rebuilt under that seed
    init = rec["init_baseline"]
    assert init["init_seeds"] == [0, 1] and init["seed"] == 0 and init["n_images"] == N_IMAGES
    assert init["architectures"] == {"ViT": TINY_VIT, "ResNet": TINY_RESNET}
    for key in rs.INIT_FIELDS:
        assert isinstance(init[key], list) and len(init[key]) == 2, key
    assert all(type(c) is int for c in init["vit_lowest_quarter_best_in_resnet_lower_half_count"])
    fresh = rs.random_init(TINY_VIT, 1)
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 rs.build_architecture(TINY_VIT).state_dict().values()))
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, rs.random_init(TINY_VIT, 0).blocks[0].attn.qkv.weight)
    models = {"ViT": rs.random_init(TINY_VIT, 1), "ResNet": rs.random_init(TINY_RESNET, 1)}
    with pytest.warns(UserWarning, match="constant"):      # timm zero-initialises each branch's last batch norm
        heat = measure.model_heatmaps(models, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=0),
                                      progress=False)
    assert init["vit_low_high"][1] == cka.band_mean(heat["ViT", "ViT"], (0, 0.25), (0.75, 1.0))
    assert init["resnet_low_high"][1] == cka.band_mean(heat["ResNet", "ResNet"], (0, 0.25), (0.75, 1.0))
    assert init["max_cka_vit_last_third"][1] == cka.nanmax(heat["ResNet", "ViT"][:, round(2 * 13 / 3):])
    assert init["vit_low_high"][0] != init["vit_low_high"][1]
    table = result.init_baseline_table()
    assert "| init seed 0 | init seed 1 |" in table and f"{init['vit_low_high'][1]:.2f}" in table
    assert len(result.init_baseline_rows()) == len(rs.INIT_FIELDS)

    # seed twins: the diagonal of the block-output cross heatmap, symmetric and cached as one computation
    twins = rec["twin_cka"]
    assert twins["seed"] == 0 and twins["vit"]["blocks"] == ["blocks.0", "blocks.1"] == result.block_names["ViT"]
    assert twins["resnet"]["blocks"] == result.block_names["ResNet"]
    pair = measure.model_heatmaps({"a": vit, "b": vit_twin}, analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=0),
                                  layers={"a": ["blocks.0", "blocks.1"], "b": ["blocks.0", "blocks.1"]}, progress=False)
    assert twins["vit"]["cka"] == pytest.approx(torch.diagonal(pair["a", "b"]).tolist(), abs=1e-9)
    assert all(-0.1 < v < 1.0 for v in twins["vit"]["cka"] + twins["resnet"]["cka"])
    n_files = len(list(cache.CACHE_DIR.glob("model_heatmaps-*.pt")))
    images = draws(rs.Params(n_draws=1))[0].images(N_IMAGES, BATCH)          # the chapter's first draw
    swapped = rs.twin_block_cka(vit_twin, vit, images)
    assert swapped == (twins["vit"]["blocks"], twins["vit"]["cka"])           # the twin run reuses the cache entry
    assert len(list(cache.CACHE_DIR.glob("model_heatmaps-*.pt"))) == n_files
    with pytest.raises(ValueError, match="same block outputs"):
        rs.twin_block_cka(vit, resnet, images, use_cache=False)
    same = rs.twin_block_cka(vit, vit, images, use_cache=False)
    assert same[1] == pytest.approx([1.0, 1.0])
    assert f"last block {twins['resnet']['cka'][-1]:.2f}" in rs.numbers([result])["rs_resnet_twin"]

    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    plotting.twin_cka_by_block(ax, result.twin_curves(), "twins")
    assert len(ax.lines) >= 2 and set(result.twin_curves()) == {"ViT vs ViT twin", "ResNet vs ResNet twin"}
    plt.close(fig)


def test_baselines_skipped_or_partial(tiny_vit, tiny_resnet):
    """No init seeds and no twins: no baselines. A model with no architecture to rebuild (no zoo entry, not an
    ``arch:`` name) leaves its own and F2's random-initialisation numbers None."""
    result = rs.run(vit=tiny_vit, resnet=tiny_resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=1, use_cache=False,
                    init_seeds=(), vit_twin=None, resnet_twin=None)
    rec = result.to_record()
    assert rec["init_baseline"] is None and rec["twin_cka"] is None
    assert "not computed" in result.init_baseline_table()
    assert rs.numbers([result])["rs_vit_twin"] == "not measured (no twin given)"
    assert result.twin_curves() == {} and result.init_baseline_rows() == []

    resnet = _zoo_like(TINY_RESNET, 11)
    result = rs.run(vit=tiny_vit, resnet=resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=1, use_cache=False,
                    init_seeds=[0], vit_twin=None, resnet_twin=_zoo_like(TINY_RESNET, 13))
    init = result.to_record()["init_baseline"]
    assert init["architectures"]["ViT"] is None and len(init["resnet_low_high"]) == 1
    assert init["vit_low_high"] is None and init["max_cka_vit_last_third"] is None
    assert "ViT: no architecture to rebuild" in result.init_baseline_table()
    assert result.twin_cka["vit"] is None and len(result.twin_cka["resnet"]["cka"]) == 4
    assert list(result.twin_curves()) == ["ResNet vs ResNet twin"]


def test_twin_arguments_and_architectures():
    from vitcnn_utils import seeds, zoo

    args = {"vit": "zoo:vit-cls", "resnet": "zoo:resnet", "vit_twin": "zoo:vit-cls-s1", "resnet_twin": "zoo:resnet-s1"}
    swapped = seeds.twin_arguments(args, rs.MODEL_ARGUMENTS)
    assert swapped == {"vit": "zoo:vit-cls-s1", "resnet": "zoo:resnet-s1", "vit_twin": "zoo:vit-cls",
                       "resnet_twin": "zoo:resnet"}
    assert seeds.twin_arguments({**args, "vit_twin": None, "resnet_twin": None}, rs.MODEL_ARGUMENTS)["vit_twin"] is None
    assert rs.architecture_of(torch.nn.Linear(2, 2), "arch:vit-cls") == zoo.SPECS["vit-cls"].arch
    assert rs.architecture_of(torch.nn.Linear(2, 2), "resnet50") is None


def test_a_twin_of_another_architecture_is_skipped(tiny_vit, tiny_resnet):
    """The notebook's default twins are zoo models: beside a model of another architecture (a timm model, here a
    tiny ViT without a zoo entry) they are no twin of it, and are skipped with the reason on the page."""
    other = _zoo_like({**TINY_VIT, "pool": "gap"}, 12)
    result = rs.run(vit=_zoo_like(TINY_VIT, 10), resnet=tiny_resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=1,
                    use_cache=False, init_seeds=None, vit_twin=other, resnet_twin=_zoo_like(TINY_RESNET, 13))
    assert result.twin_cka["vit"] is None and result.twin_cka["resnet"] is None
    assert set(result.twin_cka["skipped"]) == {"vit", "resnet"}
    assert "is not the same architecture" in rs.numbers([result])["rs_vit_twin"] and result.twin_curves() == {}


def test_gram_dtype_reaches_every_cka_and_moves_results_only_within_float32_precision(gram_dtypes):
    """gram_dtype="float32" reaches the draws' heatmaps, the init baseline and the twin CKA; the numbers move from
    float64's by float32 rounding only."""
    vit, resnet = _zoo_like(TINY_VIT, 10), _zoo_like(TINY_RESNET, 11)
    kw = dict(vit=vit, resnet=resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=1, use_cache=False,
              vit_twin=_zoo_like(TINY_VIT, 12), resnet_twin=_zoo_like(TINY_RESNET, 13), init_seeds=(0,))
    in64 = rs.run(**kw)
    assert gram_dtypes and set(gram_dtypes) == {torch.float64}
    gram_dtypes.clear()
    in32 = rs.run(**kw, gram_dtype="float32")
    assert len(gram_dtypes) == 1 + 1 + 2 and set(gram_dtypes) == {torch.float32}   # draw, init seed, two twins
    assert not torch.equal(in32.cross, in64.cross)
    torch.testing.assert_close(in32.cross, in64.cross, rtol=0, atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="gram_dtype must be one of 'float64', 'float32', got 'half'"):
        rs.run(**kw, gram_dtype="half")
    with pytest.raises(ValueError, match=r"gram_dtype must be one of 'float64', 'float32', got \['float32'\]"):
        rs.run(**kw, gram_dtype=["float32"])

"""Chapter module vitcnn_utils.chapters.data_scale: run() on tiny models records every schema field as a list over
draws, both 100% references (long schedule and matched steps) are compared, and draw 0 is the plain library
call on the same images."""

import pytest
from conftest import perturbed_copy
import torch


from vitcnn_utils import cache, evidence
from vitcnn_utils import measure
from vitcnn_utils import data as vdata
from vitcnn_utils.chapters import data_scale
from vitcnn_utils.chapters.data_scale import FULL, MATCHED, OTHER, SEED

SIZES = dict(n_images=16, batch_size=8, shots=2, val_per_class=2, n_test=16)


def _perturbed(model, scale, seed, steps=None):
    """A copy of ``model`` with Gaussian noise on its weights; ``steps`` attaches a zoo-like manifest entry."""
    other = perturbed_copy(model, scale, seed)
    if steps is not None:
        epochs, images = steps
        other.zoo_entry = {"sha256": f"fake{seed}", "epochs": epochs, "train_images": images, "fraction": images / 60000,
                           "test_accuracy": 0.5, "recipe": {"batch_size": 128}}
    return other


@pytest.fixture(scope="module")
def groups(tiny_vit, tiny_resnet):
    vit = {"3%": _perturbed(tiny_vit, 1.0, 1, (100, 1800)), "30%": _perturbed(tiny_vit, 0.3, 2, (10, 18000)),
           FULL: _perturbed(tiny_vit, 0.0, 3, (20, 60000)), MATCHED: _perturbed(tiny_vit, 0.1, 4, (3, 60000)),
           SEED: _perturbed(tiny_vit, 0.05, 7, (20, 60000)), OTHER: _perturbed(tiny_vit, 0.1, 8, (3, 60000))}
    resnet = {"3%": _perturbed(tiny_resnet, 1.0, 5), "30%": _perturbed(tiny_resnet, 0.3, 6), FULL: tiny_resnet}
    return vit, resnet


@pytest.fixture(scope="module")
def result(groups):
    vit, resnet = groups
    return data_scale.run(vit=vit[FULL], vit_matched=vit[MATCHED], resnet=resnet[FULL], vit_seed=vit[SEED],
                          vit_matched_seed=vit[OTHER], vit_fractions={"3%": vit["3%"], "30%": vit["30%"]},
                          resnet_fractions={"3%": resnet["3%"], "30%": resnet["30%"]},
                          n_draws=2, use_cache=False, **SIZES)


def test_record_has_every_schema_field_over_draws(result):
    rec = result.to_record()
    typed = data_scale.Record.from_json(evidence._plain(rec), "chapter")   # what its findings' rules read is there, typed
    assert typed.seeds == rec["seeds"] and typed.replicates == ()
    assert rec["n_draws"] == 2 and rec["smallest_fraction"] == {"ViT": "3%", "ResNet": "3%"}
    ref = rec["reference"]
    assert set(ref) >= {"long", "matched", "long_steps", "matched_steps", "small_steps"}
    assert (ref["long_steps"], ref["matched_steps"]) == (20 * 469, 3 * 469)      # epochs x ceil(images / 128)
    assert ref["small_steps"] == {"3%": 100 * 15, "30%": 10 * 141}
    for reference in ("vit_long", "vit_matched"):
        for which in ("cka_first_block", "cka_last_block"):
            values = rec[reference][which]
            assert set(values) == {"3%", "30%"} and all(len(v) == 2 for v in values.values())
    seed = rec["seed_baseline"]
    assert all(len(seed[k]) == 2 for k in ("cka_first_block", "cka_last_block", "probe_mid_seed0_minus_seed1_points"))
    assert len(seed["cka_per_block"][0]) == len(rec["layers"]["ViT"]) - 1 and seed["model"] != seed["reference"]
    for key in ("probe_mid_gain_points_long", "probe_mid_gain_points_matched"):
        assert len(rec[key]["vit"]) == 2
    for key in ("probe_mid_vit_minus_resnet_points", "probe_mid_vit_minus_resnet_points_cls"):
        assert len(rec[key]) == 2 and all(isinstance(v, float) for v in rec[key])
    assert len(rec["cka_long_vs_matched"]["cka_last_block"]) == 2


def test_draw_0_is_the_plain_library_call(result, groups):
    vit, resnet = groups
    rec = result.to_record()
    batches = vdata.analysis_batches("fashion-mnist", SIZES["n_images"], SIZES["batch_size"], seed=0)
    fit, val, test = vdata.probe_batches("fashion-mnist", SIZES["shots"], SIZES["val_per_class"], SIZES["n_test"],
                                         SIZES["batch_size"], seed=0)
    heat = measure.block_heatmaps({k: m for k, m in vit.items() if k != SEED}, batches, progress=False)
    for reference, label in (("vit_long", FULL), ("vit_matched", MATCHED)):
        matched = data_scale.matched_layer_cka(heat, label)
        for small in ("3%", "30%"):
            assert rec[reference]["cka_first_block"][small][0] == matched[small][1].item()
            assert rec[reference]["cka_last_block"][small][0] == matched[small][-1].item()
            assert torch.equal(result.cka[reference][small][0], matched[small])
    seed = data_scale.matched_layer_cka(measure.block_heatmaps({FULL: vit[FULL], SEED: vit[SEED]}, batches,
                                                                progress=False), FULL)[SEED]
    assert rec["seed_baseline"]["cka_first_block"][0] == seed[1].item()
    assert rec["seed_baseline"]["cka_last_block"][0] == seed[-1].item()
    res_heat = data_scale.matched_layer_cka(measure.block_heatmaps(resnet, batches, progress=False), FULL)
    assert rec["resnet"]["cka_last_block"]["3%"][0] == res_heat["3%"][-1].item()

    spatial = measure.block_probes(vit, fit, val, test, 10, "gap_spatial")
    cls = measure.block_probes(vit, fit, val, test, 10, "first")
    gap = measure.block_probes(resnet, fit, val, test, 10, "gap")
    mid = result.mid_index
    assert mid == {"ViT": 0, "ResNet": 1}                     # 2 ViT blocks, 4 ResNet units: (n - 1) // 2
    assert OTHER not in result.probe["ViT"]["spatial"]      # the other-seed reference is compared by CKA only
    for label in (lb for lb in vit if lb != OTHER):
        assert torch.equal(result.probe["ViT"]["spatial"][label][0], spatial[label])
        assert torch.equal(result.probe["ViT"]["cls"][label][0], cls[label])
    assert rec["probe_mid_gain_points_long"]["vit"][0] == 100 * (spatial[FULL][0].item() - spatial["3%"][0].item())
    assert rec["probe_mid_gain_points_matched"]["vit"][0] == 100 * (spatial[MATCHED][0].item() - spatial["3%"][0].item())
    assert rec["probe_mid_vit_minus_resnet_points"][0] == 100 * (spatial[FULL][0].item() - gap[FULL][1].item())
    assert rec["probe_mid_vit_minus_resnet_points_cls"][0] == 100 * (cls[FULL][0].item() - gap[FULL][1].item())
    assert rec["seed_baseline"]["probe_mid_seed0_minus_seed1_points"][0] == \
        100 * (spatial[FULL][0].item() - spatial[SEED][0].item())


def test_without_a_matched_model(groups):
    vit, resnet = groups
    r = data_scale.run(vit=vit[FULL], vit_matched=None, vit_seed=None, vit_matched_seed=None, resnet=resnet[FULL], vit_fractions={"3%": vit["3%"]},
                       resnet_fractions={"3%": resnet["3%"]}, n_draws=1, use_cache=False, **SIZES)
    rec = r.to_record()
    assert rec["vit_matched"] is None and rec["probe_mid_gain_points_matched"] is None
    assert rec["reference"]["matched"] is None and rec["reference"]["matched_steps"] is None
    assert len(rec["vit_long"]["cka_first_block"]["3%"]) == 1
    with pytest.raises(ValueError, match="fractions"):
        data_scale.run(vit=vit[FULL], vit_matched=None, vit_seed=None, vit_matched_seed=None, resnet=resnet[FULL], vit_fractions={FULL: vit["3%"]},
                       **SIZES)


def test_the_matched_reference_of_the_other_seed_is_compared_with_every_small_model_and_the_matched_one(result, groups):
    """F11's seed baseline: CKA with the other seed's matched 100% model, as the plain library call gives it."""
    vit, _ = groups
    rec = result.to_record()["vit_matched_other_seed"]
    assert set(rec["cka"]) == {"3%", "30%"} and len(rec["baseline"]["cka_last_block"]) == 2
    batches = vdata.analysis_batches("fashion-mnist", SIZES["n_images"], SIZES["batch_size"], seed=0)
    h = measure.block_heatmaps({OTHER: vit[OTHER], MATCHED: vit[MATCHED], "3%": vit["3%"], "30%": vit["30%"]},
                               batches, progress=False)
    diag = h["3%", OTHER].diagonal()
    assert rec["cka"]["3%"]["cka_first_block"][0] == pytest.approx(diag[1].item(), abs=1e-12)
    assert rec["baseline"]["cka_last_block"][0] == pytest.approx(h[MATCHED, OTHER].diagonal()[-1].item(), abs=1e-12)


def test_numbers_and_tables_are_intervals_over_seeds_and_draws(result):
    from vitcnn_utils import findings
    nums = data_scale.numbers([result])                  # one training seed: the interval over its draws
    small = result.smallest["ViT"]
    assert nums["ds_drop_long"] == findings.interval([result.first_minus_last("vit_long", small)]).text()
    assert nums["ds_gain_long"] == findings.interval([result.gain_points("ViT", data_scale.SPATIAL)]).text(1, unit=" points")
    assert nums["ds_runs"] == f"1 training seed × {result.n_draws} draws" and all(isinstance(v, str) for v in nums.values())
    cka = data_scale.cka_table([result])
    assert cka.count("of the data |") == len(result.fractions["ViT"])
    assert findings.interval([result.cka_block("vit_long", small, "last")]).text() in cka
    probes = data_scale.probe_table([result])
    assert findings.interval([result.mid("ResNet", data_scale.SPATIAL, FULL)]).text(1, 100, "%") in probes
    assert OTHER not in probes


def test_gram_dtype_reaches_every_cka(groups, gram_dtypes, monkeypatch):
    monkeypatch.setattr(data_scale, "GRAM_STORE", cache.MemoryStore(max_bytes=2 ** 30))   # Grams computed here
    vit, resnet = groups
    data_scale.run(vit=vit[FULL], vit_matched=vit[MATCHED], resnet=resnet[FULL], vit_seed=vit[SEED],
                   vit_matched_seed=vit[OTHER], vit_fractions={"3%": vit["3%"]}, resnet_fractions={"3%": resnet["3%"]},
                   n_draws=1, use_cache=False, gram_dtype="float32", **SIZES)
    assert gram_dtypes and set(gram_dtypes) == {torch.float32}

"""The local/global chapter's computation (vitcnn_utils.chapters.local_global) on tiny models, and its reader
of the recipe ablation on a synthetic recipe_ablation.json."""
import dataclasses
import json

import pytest
import torch

from vitcnn_utils import evidence
from vitcnn_utils import attention, cache, findings, localisation
from vitcnn_utils import measure
from vitcnn_utils import data as vdata
from vitcnn_utils.chapters import local_global as lg
from vitcnn_utils.zoo import ablation

N_DRAWS, N_IMAGES, BATCH, N_ERF = 2, 8, 4, 4
LOW_LAYERS = ["maxpool", "layer1.0"]
SCHEMA_FIELDS = ("n_draws", "n_images", "uniform_distance", "distances_all_data", "distances_less_data",
                 "head_subset_rank_correlation", "erf_radius", "vit_erf_layers", "resnet_erf_layers",
                 "recipe_ablation")
ABLATION_FIELDS = ("recipe", "epochs", "test_accuracy", "block0_distances_px", "uniform_distance_px",
                   "local_heads_block0", "local_heads_per_block", "distances_px")


def _run(vit, vit_small, resnet, **kw):
    kw = {"resnet_low_layers": LOW_LAYERS, "vit_erf_layers": ["blocks.0", "blocks.1"],
          "resnet_erf_layers": ["layer1.0", "layer2.0"], "n_images": N_IMAGES, "batch_size": BATCH,
          "n_erf_images": N_ERF, "n_draws": N_DRAWS, "seed": 3, **kw}
    return lg.run(vit=vit, vit_small_data=vit_small, resnet=resnet, **kw)


@pytest.fixture(scope="module")
def synthetic_ablation(tmp_path_factory):
    """Two measured variants (uniform distance 10 px, local below 7.5 px), block 0 of draw 1 of `cutmix`
    with one local head fewer than draw 0."""
    path = tmp_path_factory.mktemp("ablation") / "recipe_ablation.json"
    entries = {
        "baseline": {"epochs": 5, "test_accuracy": 0.87, "uniform_distance_px": 10.0,
                     "arch": ablation.VARIANTS["baseline"][0], "recipe": ablation.VARIANTS["baseline"][1].to_dict(),
                     "n_images": 500, "train_seconds": 1.0,
                     "distances_px": [[[9.0, 10.0], [10.0, 10.5]], [[9.1, 10.1], [10.0, 10.4]]]},
        "cutmix": {"epochs": 5, "test_accuracy": 0.885, "uniform_distance_px": 10.0,
                   "arch": ablation.VARIANTS["cutmix"][0], "recipe": ablation.VARIANTS["cutmix"][1].to_dict(),
                   "n_images": 500, "train_seconds": 1.0,
                   "distances_px": [[[2.0, 7.4], [7.0, 9.0]], [[2.5, 7.6], [8.0, 9.0]]]},
    }
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded machine extra threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def result(tiny_vit, tiny_resnet, synthetic_ablation, cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "CACHE_DIR", cache_dir)
        return _run(tiny_vit, tiny_vit, tiny_resnet, ablation_results=synthetic_ablation)


def test_record_has_every_schema_field_with_one_entry_per_draw(result):
    rec = result.to_record()
    typed = lg.Record.from_json(evidence._plain(rec), "chapter")   # what its findings' rules read is there, typed
    assert typed.seeds == rec["seeds"] and typed.replicates == ()
    for name in SCHEMA_FIELDS:
        assert name in rec, name
    assert rec["n_draws"] == N_DRAWS and rec["n_images"] == N_IMAGES
    for name in ("distances_all_data", "distances_less_data", "head_subset_rank_correlation"):
        assert len(rec[name]) == N_DRAWS, name
    assert set(rec["erf_radius"]) == {"ViT blocks.0", "ViT blocks.1", "ResNet layer1.0", "ResNet layer2.0"}
    assert all(len(v) == N_DRAWS for v in rec["erf_radius"].values())
    assert len(rec["distances_all_data"][0]) == 2 and len(rec["distances_all_data"][0][0]) == 4  # blocks, heads
    for row in rec["recipe_ablation"]:
        assert set(ABLATION_FIELDS) <= set(row)
    json.dumps(rec)                                      # plain JSON, as findings.record writes it


def test_draw_zero_equals_the_plain_library_calls(result, tiny_vit, tiny_resnet):
    batches = vdata.analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=3)
    dist = measure.attention_distances(tiny_vit, batches)[0]
    assert result.distances_all_data[0] == dist.tolist()
    subsets = measure.head_subset_cka(tiny_vit, tiny_resnet, batches, LOW_LAYERS)
    rho = attention.rank_correlation(subsets["distance"], subsets["cka"].mean(1))
    assert result.head_subset_rank_correlation[0] == pytest.approx(rho, abs=1e-12)
    for i, heads in enumerate(subsets["heads"]):
        assert result.head_cka[0][heads[0]] == pytest.approx(subsets["cka"][i].tolist(), abs=1e-12)
    images = next(iter(vdata.analysis_batches("fashion-mnist", N_ERF, N_ERF, seed=3 + lg.ERF_SEED_OFFSET)))[0]
    erf = measure.effective_receptive_field(tiny_resnet, images, "layer1.0")
    assert result.erf_radius["ResNet layer1.0"][0] == localisation.erf_radius(erf)
    assert result.uniform_distance == measure.uniform_distance(tiny_vit)
    assert result.uniform_erf_radius == localisation.erf_radius(torch.ones(28, 28, dtype=torch.float64))


def test_draws_use_different_images(result):
    assert result.seeds == [3, 4] and result.erf_seeds == [3 + lg.ERF_SEED_OFFSET, 4 + lg.ERF_SEED_OFFSET]
    assert result.distances_all_data[0] != result.distances_all_data[1]


def test_each_draw_is_cached(result, tiny_vit, tiny_resnet, synthetic_ablation, cache_dir, monkeypatch):
    files = sorted(p.name for p in cache_dir.iterdir())
    # per draw: one distance entry (the same weights under two labels are one call), one head-subset entry, four
    # receptive fields
    assert len(files) == N_DRAWS * (1 + 1 + 4)
    monkeypatch.setattr(cache, "CACHE_DIR", cache_dir)
    again = _run(tiny_vit, tiny_vit, tiny_resnet, ablation_results=synthetic_ablation)
    assert sorted(p.name for p in cache_dir.iterdir()) == files
    assert again.to_record() == result.to_record()
    uncached = _run(tiny_vit, tiny_vit, tiny_resnet, ablation_results=synthetic_ablation, use_cache=False,
                    n_draws=1)
    assert uncached.distances_all_data[0] == result.distances_all_data[0]


def test_ablation_reader_counts_local_heads(synthetic_ablation):
    ab = lg.read_ablation(synthetic_ablation)
    assert [v.recipe for v in ab.variants] == ["cutmix", "baseline"]          # the ablation's own order
    assert ab.pending == tuple(n for n in (*ablation.VARIANTS, *ablation.DERIVED) if n not in ("cutmix", "baseline"))
    cutmix, baseline = ab.variants
    assert cutmix.local_heads_per_block == [[2, 1], [1, 0]]                    # below 7.5 px, strictly
    assert cutmix.local_heads_block0 == 1                                      # the fewest over draws
    assert baseline.local_heads_per_block == [[0, 0], [0, 0]] and baseline.local_heads_block0 == 0
    assert cutmix.block0_distances_px == pytest.approx([2.25, 7.5])
    assert cutmix.change.startswith("CutMix") and baseline.change.startswith("none")
    assert [v.recipe for v in ab.candidates()] == ["cutmix"]
    assert ab.adopted(reference_accuracy=0.89) == []                             # 5 epochs, one seed: not yet
    row = cutmix.to_record()
    assert row["local_heads_block0"] == 1 and row["uniform_distance_px"] == 10.0


def test_missing_ablation_file_measures_nothing(tmp_path):
    ab = lg.read_ablation(tmp_path / "absent.json")
    assert ab.variants == () and ab.pending == (*ablation.VARIANTS, *ablation.DERIVED)


def test_adoption_needs_the_full_schedule_two_seeds_and_the_accuracy_margin(synthetic_ablation, tmp_path):
    """issue 25's rule: full schedule, a local block-0 head in every draw, for two seeds, within 2 points."""
    cutmix = json.loads(synthetic_ablation.read_text())["cutmix"]
    full = {**cutmix, "epochs": 20, "recipe": {**cutmix["recipe"], "epochs": 20}}

    def adopted(entries, reference=0.897):
        path = tmp_path / "a.json"
        path.write_text(json.dumps(entries))
        return [v.recipe for v in lg.read_ablation(path).adopted(reference)]
    assert adopted({"best-full": full, "best-full-s1": {**full, "seed": 1}}) == ["best-full"]
    assert adopted({"best-full": full}) == []                                           # one seed
    assert adopted({"best-full": full, "best-full-s1": {**full, "seed": 1}}, reference=0.906) == []  # 2.1 points
    assert adopted({"best-full": full, "other": {**full, "seed": 1, "arch": {**full["arch"], "num_heads": 8}}}) == []
    assert adopted({"best-full": full, "best-full-s1": {**full, "seed": 1, "distances_px": [
        [[9.0, 9.5], [9.0, 9.0]], [[2.0, 9.0], [9.0, 9.0]]]}}) == []                      # no local head in draw 0
    assert adopted({"c": cutmix, "c-s1": {**cutmix, "seed": 1}}) == []                 # 5 epochs


def test_ablation_text_follows_the_numbers(result, synthetic_ablation, tmp_path):
    text = result.ablation_outcome()
    assert "`cutmix` gives block 0 1 local head(s) in every draw" in text and "not adopted" in text
    assert "No recipe measured so far meets the rule" in text
    nums = lg.numbers([result])
    assert nums["lg_ab_most_local"] == "cutmix" and nums["lg_rule_local"] == "0.75" and nums["lg_rule_seeds"] == "2"
    assert "heads8" in nums["lg_ab_measured"] and "patch2-best" in nums["lg_ab_measured"]
    assert nums["lg_ab_measured"].startswith(f"2 of {2 + len(result.ablation.pending)} recipes are measured (not yet: ")
    table = result.ablation_table()
    assert "| `cutmix` |" in table and "88.50%" in table and "not yet measured" in table
    assert " 1–2 · 0–1 |" in table                                             # local heads per block, min–max
    assert "`heads8`" in text and "`patch2-best`" in text                          # the unmeasured ones listed
    # nothing measured at all
    none = dataclasses.replace(result, ablation=lg.read_ablation(tmp_path / "absent.json"))
    assert "Not measured yet" in none.ablation_outcome() and none.ablation_columns()[0][1] is None
    assert lg.numbers([none])["lg_ab_most_local"] == "not measured"
    # everything measured, nothing local
    entries = json.loads(synthetic_ablation.read_text())
    full = {name: {**entries["baseline"], "arch": arch, "recipe": recipe.to_dict()}
            for name, (arch, recipe) in ablation.VARIANTS.items()}
    full.update({name: entries["baseline"] for name in ablation.DERIVED})
    full["best-full"] = {**entries["baseline"], "epochs": lg.VIT_EPOCHS}
    path = tmp_path / "full.json"
    path.write_text(json.dumps(full))
    done = dataclasses.replace(result, ablation=lg.read_ablation(path))
    text = done.ablation_outcome()
    assert "a measured negative result" in text and "F4 predicts" in text
    ratios = [ablation.block0_locality(v.distances_px, v.uniform_distance_px) for v in done.ablation.variants]
    assert f"Across the {len(ratios)} recipes" in text and f"{min(ratios):.2f}–{max(ratios):.2f}×" in text
    assert "`best-full`, trained for the full" in text                     # the full-schedule run named
    assert "Outside the rule" not in text                                   # no local head anywhere
    assert lg.numbers([done])["lg_ab_measured"] == f"All {len(ratios)} recipes are measured"
    # a full-schedule run with a local head deeper than block 0 in every draw: reported, not counted
    full["best-full"] = {**full["best-full"], "distances_px": [[[9.0, 9.5], [2.0, 9.0]], [[9.0, 9.0], [3.0, 8.0]]]}
    path.write_text(json.dumps(full))
    deeper = dataclasses.replace(result, ablation=lg.read_ablation(path))
    text = deeper.ablation_outcome()
    assert "a measured negative result" in text                             # block 0 still decides
    assert "`best-full` has local heads deeper in the network in every draw (1 in block 1, of 2 blocks)" in text


def test_numbers_are_intervals_over_seeds_and_draws(result):
    nums = lg.numbers([result, result])          # two "seeds" with equal values: the interval of one
    assert nums == lg.numbers([result]) | {"lg_runs": f"2 training seeds × {N_DRAWS} draws",
                                           "lg_all_local_b0": nums["lg_all_local_b0"],
                                           "lg_all_local_all": nums["lg_all_local_all"],
                                           "lg_less_local_b0": nums["lg_less_local_b0"],
                                           "lg_less_local_all": nums["lg_less_local_all"]}
    assert nums["lg_rho"] == findings.interval([result.head_subset_rank_correlation]).text()
    assert nums["lg_uniform_erf"] == f"{result.uniform_erf_radius:.1f} px"
    assert f"over {2 * N_DRAWS} runs" in nums["lg_all_local_all"] or f"in all {2 * N_DRAWS} runs" in nums["lg_all_local_all"]
    assert all(isinstance(v, str) for v in nums.values())


def test_recipe_plot_phone_layout_draws_the_same_points_on_swapped_axes():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from vitcnn_utils import plotting
    columns = [("a\n5 ep.", [[0.5, 1.0], [0.7, 0.9]]), ("b", None), ("zoo vit-cls\n20 ep.", [[1.0, 0.98]])]
    points = {}
    for horizontal in (False, True):
        fig, ax = plt.subplots()
        plotting.recipe_ablation_distances(ax, columns, 0.75, "t", horizontal=horizontal)
        xy = [line.get_xydata() for line in ax.lines if line.get_marker() == "o"]
        points[horizontal] = [p[:, ::-1] if horizontal else p for p in xy]
        ticks = [t.get_text() for t in (ax.get_yticklabels() if horizontal else ax.get_xticklabels())]
        assert ticks == [label for label, _ in columns]
        assert any("not yet measured" in t.get_text() for t in ax.texts)
        plt.close(fig)
    assert len(points[False]) == 2                                  # one errorbar per measured column
    for wide, narrow in zip(points[False], points[True]):
        assert wide.tolist() == narrow.tolist()
    assert points[False][0][:, 1].tolist() == [0.6, 0.95]           # the mean over draws of each head


def test_gram_dtype_reaches_every_cka(tiny_vit, tiny_resnet, synthetic_ablation, gram_dtypes):
    _run(tiny_vit, tiny_vit, tiny_resnet, ablation_results=synthetic_ablation, n_draws=1, use_cache=False,
         gram_dtype="float32")
    assert gram_dtypes and set(gram_dtypes) == {torch.float32}

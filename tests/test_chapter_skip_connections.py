"""vitcnn_utils.chapters.skip_connections: every field of the results schema, one value per draw, steps from the
zoo manifest entries, and draw 0 equal to the plain library calls on seed 0's images."""
import math

import pytest
import torch

from vitcnn_utils import evidence
from vitcnn_utils import findings, skips
from vitcnn_utils import measure
from vitcnn_utils.chapters import skip_connections as sc
from vitcnn_utils.data import analysis_batches
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.train import model_accuracies
from vitcnn_utils.zoo import optimisation_steps

N_DRAWS, N_IMAGES, BATCH = 2, 16, 8
RATIOS = {"cls_ratio_first_half", "spatial_ratio_first_half", "cls_ratio_second_half", "spatial_ratio_second_half",
          "vit_median_ratio", "resnet_median_ratio"}
ROW = {"block", "depth_fraction", "steps", "split_cka_intact", "split_cka_no_skip", "accuracy_drop"}


def entry(epochs):
    return {"sha256": f"fake-{epochs}", "epochs": epochs, "train_images": 60000, "recipe": {"batch_size": 128},
            "test_accuracy": 0.5}


def vit(seed, **kw):
    torch.manual_seed(seed)
    return build_vit(embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0, pool="cls", **kw).eval()


@pytest.fixture(scope="module")
def vits():
    long, control = vit(10), vit(11)
    no_skip = [vit(12 + b, no_skip_blocks=[b]) for b in (0, 1)]
    long.zoo_entry, control.zoo_entry = entry(20), entry(3)
    for m in no_skip:
        m.zoo_entry = entry(3)
    return long, control, no_skip


def test_record_fields_and_draw_zero(vits, tiny_resnet):
    long, control, no_skip = vits
    result = sc.run(vit=long, resnet=tiny_resnet, vit_control=control, vit_no_skip=no_skip, n_images=N_IMAGES, batch_size=BATCH, n_draws=N_DRAWS,
                    use_cache=False)
    rec = result.to_record()
    typed = sc.Record.from_json(evidence._plain(rec), "chapter")   # what its findings' rules read is there, typed
    assert typed.seeds == rec["seeds"] and typed.replicates == ()
    assert {"n_draws", "n_images", "control", "no_skip"} | RATIOS <= set(rec)
    assert rec["n_draws"] == N_DRAWS and rec["n_images"] == N_IMAGES
    for field in RATIOS:
        assert len(rec[field]) == N_DRAWS and all(math.isfinite(x) for x in rec[field]), field
    steps = optimisation_steps(entry(3))
    assert rec["control"]["name"] == "control" and rec["control"]["steps"] == steps == 3 * 469
    assert [row["block"] for row in rec["no_skip"]] == [0, 1]
    for row in rec["no_skip"]:
        assert ROW <= set(row) and row["steps"] == steps
        for field in ("split_cka_intact", "split_cka_no_skip", "accuracy_drop"):
            assert len(row[field]) == N_DRAWS
    assert rec["vit"]["steps"] == optimisation_steps(entry(20))

    # draw 0 against the library on seed 0's images
    batches = analysis_batches("fashion-mnist", N_IMAGES, BATCH, seed=0)
    vr, sublayers = measure.vit_skip_ratios(long, batches)
    rr, units = measure.resnet_skip_ratios(tiny_resnet, batches)
    summary = sc.skip_ratio_summary(vr, rr, 1)
    for field in RATIOS:
        assert rec[field][0] == summary[field], field
    assert result.sublayers == sublayers and result.units == units
    models = {"control": control, "no-skip 0": no_skip[0], "no-skip 1": no_skip[1]}
    heatmaps = measure.model_heatmaps(models, batches, progress=False)
    acc = model_accuracies(models, batches)
    expected = sc.no_skip_comparison(heatmaps, "control", {k: models[k] for k in ("no-skip 0", "no-skip 1")},
                                        acc, control)
    for row, exp in zip(rec["no_skip"], expected):
        assert abs(row["split_cka_intact"][0] - exp["split_cka_intact"]) < 1e-9
        assert abs(row["split_cka_no_skip"][0] - exp["split_cka_no_skip"]) < 1e-9
        assert row["accuracy_drop"][0] == exp["accuracy_drop"]
    long_heatmap = measure.model_heatmaps({"long": long}, batches, progress=False)["long", "long"]
    long_split = skips.split_contrast(long_heatmap, heatmaps.names["control"], 1)
    assert abs(rec["no_skip"][1]["split_cka_long"][0] - long_split) < 1e-9

    # figures' views and text
    profile = result.profile()
    assert profile["cls"].shape == (N_DRAWS, len(sublayers)) and profile["resnet"].shape == (N_DRAWS, len(units))
    panels = result.heatmap_panels()
    assert [p["block"] for p in panels] == [None, 0, 1]
    assert torch.equal(panels[0]["matrix"], result.within["control"].mean(0))
    series = result.no_skip_series()
    assert series["blocks"] == [0, 1] and series["middle_block"] in (0, 1) and len(series["split"]) == 3
    assert list(series["drops"]) == ["vs control (same schedule)"]      # not against the long schedule
    assert series["drops"]["vs control (same schedule)"][1] == [100 * x for x in rec["no_skip"][1]["accuracy_drop"]]
    nums = sc.numbers([result])            # one training seed: the interval over its draws
    assert nums["sk_vit_median"] == findings.interval([rec["vit_median_ratio"]]).text()
    assert nums["sk_budget"] == "matched" and all(isinstance(v, str) for v in nums.values())
    table = sc.no_skip_table([result])
    drop = findings.interval([rec["no_skip"][1]["accuracy_drop"]]).text(1, 100)
    assert table.count("| block ") == 2 and drop in table.splitlines()[-1]
    rows = {r["finding"]: r for r in findings.table({"skip_connections": findings._plain(rec)})}
    assert rows[7]["verdict"] != findings.NOT_MEASURED
    assert rows[8]["verdict"] not in (findings.NOT_MEASURED, findings.CONFOUNDED)   # steps matched


def test_without_control_or_no_skip_models(vits, tiny_resnet):
    long, _, no_skip = vits
    result = sc.run(vit=long, resnet=tiny_resnet, vit_control=None, vit_no_skip=no_skip[:1], n_images=N_IMAGES, batch_size=BATCH, n_draws=1,
                    use_cache=False)
    rec = result.to_record()
    assert rec["control"] == {"name": None, "steps": None} and result.intact.name == "ViT"
    row = rec["no_skip"][0]
    assert row["split_cka_intact"] == row["split_cka_long"]
    rows = {r["finding"]: r for r in findings.table({"skip_connections": findings._plain(rec)})}
    assert rows[8]["verdict"] == findings.CONFOUNDED                   # no matched control
    empty = sc.run(vit=long, resnet=tiny_resnet, vit_control=None, vit_no_skip=[], n_images=N_IMAGES, batch_size=BATCH, n_draws=1, use_cache=False)
    assert empty.to_record()["no_skip"] == [] and "nothing measured" in sc.no_skip_table([empty])
    assert sc.numbers([empty])["sk_budget"].startswith("not applicable")


def test_gram_dtype_reaches_every_cka(vits, tiny_resnet, gram_dtypes):
    long, control, no_skip = vits
    sc.run(vit=long, resnet=tiny_resnet, vit_control=control, vit_no_skip=no_skip, n_images=N_IMAGES,
           batch_size=BATCH, n_draws=1, use_cache=False, gram_dtype="float32")
    assert gram_dtypes and set(gram_dtypes) == {torch.float32}

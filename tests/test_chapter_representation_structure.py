"""vitcnn_utils.chapters.representation_structure: every field of the results schema, one value per draw, and
draw 0 equal to the plain library calls on seed 0's images (block outputs from a separate capture)."""
import torch

from vitcnn_utils import cka, findings
from vitcnn_utils import measure
from vitcnn_utils.chapters import representation_structure as rs
from vitcnn_utils.data import analysis_batches
from vitcnn_utils.hooks import block_outputs

N_DRAWS, N_IMAGES, BATCH = 2, 16, 8
SCHEMA = {"n_draws", "n_images", "vit_low_high", "resnet_low_high", "vit_low_high_blocks", "resnet_low_high_blocks",
          "vit_lowest_quarter_best_in_resnet_lower_half_count", "vit_lowest_quarter_layers", "max_cka_vit_last_third"}
PER_DRAW = SCHEMA - {"n_draws", "n_images", "vit_lowest_quarter_layers"}


def test_record_fields_and_draw_zero(tiny_vit, tiny_resnet):
    result = rs.run(tiny_vit, tiny_resnet, n_images=N_IMAGES, batch_size=BATCH, n_draws=N_DRAWS, use_cache=False)
    rec = result.to_record()
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
    assert findings.fmt(rec["vit_low_high"]) in result.measured_within()
    assert findings.fmt(rec["max_cka_vit_last_third"]) in result.measured_across()
    rows = [r for r in findings.table({"representation_structure": findings._plain(rec)})
            if r["chapter"] == "representation_structure"]
    assert [r["finding"] for r in rows] == [1, 2] and all(r["verdict"] != findings.NOT_MEASURED for r in rows)

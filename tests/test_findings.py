"""The conclusion's verdicts follow from recorded numbers by the stated rules."""
import copy
import math

import torch

from vitcnn_utils import findings


def paper_like():
    """Numbers shaped like the paper's results: every criterion holds."""
    u = 14.4
    return {
        "representation_structure": {"vit_low_high": 0.8, "resnet_low_high": 0.3,
                                     "vit_lowest_quarter_best_in_resnet_lower_half": 1.0,
                                     "max_cka_vit_last_third": 0.4},
        "local_global": {"uniform_distance": u,
                         "distances_all_data": [[3.0, 6.0, 14.0, 15.0], [14.0, 14.5, 15.0, 16.0]],
                         "distances_less_data": [[13.5, 14.0, 15.0, 15.5], [14.0, 14.5, 15.0, 16.0]],
                         "summary_all_data": {"first_min": 3.0, "first_max": 15.0},
                         "head_subset_rank_correlation": -0.8,
                         "erf_radius": {"ViT blocks.0": 5.0, "ViT blocks.2": 9.0, "ViT blocks.5": 10.0,
                                        "ResNet layer1.0": 2.0, "ResNet layer2.1": 4.0, "ResNet layer4.0": 7.0},
                         "vit_erf_layers": ["blocks.0", "blocks.2", "blocks.5"],
                         "resnet_erf_layers": ["layer1.0", "layer2.1", "layer4.0"]},
        "skip_connections": {"cls_ratio_first_half": 20.0, "spatial_ratio_first_half": 3.0,
                             "cls_ratio_second_half": 2.0, "spatial_ratio_second_half": 5.0,
                             "vit_median_ratio": 6.0, "resnet_median_ratio": 1.5,
                             "no_skip": [{"block": b, "depth_fraction": b / 5, "split_cka_intact": 0.8,
                                          "split_cka_no_skip": 0.3, "accuracy_drop": 0.04, "steps_fraction": 1.0}
                                         for b in (1, 3, 5)]},
        "spatial": {"vit_cls": {"interior_own_patch_is_best": 0.9}, "vit_gap": {"interior_own_patch_is_best": 0.3},
                    "resnet": {"interior_own_patch_is_best": 0.2}, "vit_cls_tokens": 0.1, "vit_gap_tokens": 0.57,
                    "resnet_tokens": 0.5, "vit_cls_cls": 0.6, "vit_gap_gap": 0.61},
        "data_scale": {"smallest_fraction": {"ViT": "3%"},
                       "vit": {"cka_first_block": {"3%": 0.95}, "cka_last_block": {"3%": 0.4}},
                       "probe_mid_gain_points": {"vit": 30.0}, "probe_mid_vit_minus_resnet_points": 5.0},
    }


def test_paper_like_numbers_reproduce_every_finding():
    rows = findings.table(paper_like())
    assert [r["finding"] for r in rows] == list(range(1, 13))
    assert all(r["verdict"] == findings.REPRODUCED for r in rows), [(r["finding"], r["met"]) for r in rows]
    assert all(r["note"] == "" for r in rows)


def test_contrary_numbers_are_not_reproduced_and_partial_is_partly():
    results = paper_like()
    rs = results["representation_structure"]
    rs["vit_low_high"], rs["resnet_low_high"] = 0.3, 0.8                  # the ResNet is the uniform one
    results["local_global"]["head_subset_rank_correlation"] = -0.2        # negative but weak: 1 of 2
    rows = {r["finding"]: r for r in findings.table(results)}
    assert rows[1]["verdict"] == findings.NOT_REPRODUCED and rows[1]["note"]
    assert rows[5]["verdict"] == findings.PARTLY and rows[5]["met"] == "1/2"
    assert "+0.80" not in rows[5]["measured"] and "-0.20" in rows[5]["measured"]


def test_no_local_heads_in_either_model_is_partly():
    results = paper_like()
    lg = results["local_global"]
    lg["distances_all_data"] = copy.deepcopy(lg["distances_less_data"])
    rows = {r["finding"]: r for r in findings.table(results)}
    assert rows[3]["verdict"] == findings.PARTLY                         # no local head in block 0
    assert rows[4]["verdict"] == findings.PARTLY                         # none with less data, but none with more


def test_missing_chapter_is_not_measured():
    results = paper_like()
    del results["spatial"]
    rows = {r["finding"]: r for r in findings.table(results)}
    assert rows[9]["verdict"] == rows[10]["verdict"] == findings.NOT_MEASURED
    assert rows[1]["verdict"] == findings.REPRODUCED


def test_skip_chapter_without_no_skip_models_leaves_fig8_not_measured():
    results = paper_like()
    results["skip_connections"]["no_skip"] = []                       # paper-scale run: no public no-skip ViTs
    rows = {r["finding"]: r for r in findings.table(results)}
    assert rows[8]["verdict"] == findings.NOT_MEASURED
    assert rows[7]["verdict"] == findings.REPRODUCED


def test_record_and_load_round_trip(tmp_path):
    findings.record("chapter", {"t": torch.tensor([[1.0, 2.0]]), "x": 0.5, "nan": float("nan"),
                                "nested": {"a": torch.tensor(3)}}, tmp_path)
    loaded = findings.load(tmp_path)
    assert loaded == {"chapter": {"t": [[1.0, 2.0]], "x": 0.5, "nan": None, "nested": {"a": 3}}}
    assert not list(tmp_path.glob("*.tmp"))
    assert math.isclose(loaded["chapter"]["x"], 0.5)

"""The conclusion's verdicts follow from recorded per-draw numbers by the stated rules: every verdict category
on synthetic results, criteria met only across all draws, counts compared as integers."""
import copy
import math

import pytest
import torch

from vitcnn_utils import findings

N = 5


def d(*values):
    """Per-draw values: one number repeated over N draws, or the N values given."""
    return list(values) * N if len(values) == 1 else list(values)


def distances(block0, last, draws=N):
    return [[list(block0), [14.0, 14.5, 15.0, 16.0], list(last)] for _ in range(draws)]


def paper_like():
    """Numbers shaped like the paper's results, 5 draws each: every criterion holds in every draw."""
    u = 14.4
    return {
        "representation_structure": {"n_draws": N, "vit_low_high": d(0.8, 0.82, 0.79, 0.81, 0.8),
                                     "resnet_low_high": d(0.3), "vit_low_high_blocks": d(0.85),
                                     "resnet_low_high_blocks": d(0.35),
                                     "vit_lowest_quarter_best_in_resnet_lower_half_count": d(8),
                                     "vit_lowest_quarter_layers": 8, "max_cka_vit_last_third": d(0.4)},
        "local_global": {"n_draws": N, "uniform_distance": u,
                         "distances_all_data": distances([3.0, 6.0, 14.0, 15.0], [14.0, 14.2, 15.0, 16.0]),
                         "distances_less_data": distances([13.5, 14.0, 15.0, 15.5], [14.0, 14.5, 15.0, 16.0]),
                         "head_subset_rank_correlation": d(-0.8, -0.6, -0.9, -0.7, -0.8),
                         "erf_radius": {"ViT blocks.0": d(5.0), "ViT blocks.2": d(9.0), "ViT blocks.5": d(10.0),
                                        "ResNet layer1.0": d(2.0), "ResNet layer2.1": d(4.0),
                                        "ResNet layer4.0": d(7.0)},
                         "vit_erf_layers": ["blocks.0", "blocks.2", "blocks.5"],
                         "resnet_erf_layers": ["layer1.0", "layer2.1", "layer4.0"]},
        "skip_connections": {"cls_ratio_first_half": d(20.0), "spatial_ratio_first_half": d(3.0),
                             "cls_ratio_second_half": d(2.0), "spatial_ratio_second_half": d(5.0),
                             "vit_median_ratio": d(6.0), "resnet_median_ratio": d(1.5),
                             "control": {"name": "zoo:vit-cls-e3", "steps": 1407},
                             "no_skip": [{"block": b, "depth_fraction": b / 5, "steps": 1407,
                                          "split_cka_intact": d(0.8), "split_cka_no_skip": d(0.3),
                                          "accuracy_drop": d(0.04)} for b in (1, 3, 5)]},
        "spatial": {"vit_cls": {"interior_own_patch_count": d(23), "interior_tokens": 25},
                    "vit_gap": {"interior_own_patch_count": d(8), "interior_tokens": 25},
                    "resnet": {"interior_own_patch_count": d(5), "interior_tokens": 25},
                    "vit_cls_tokens": d(0.1), "vit_gap_tokens": d(0.57), "resnet_tokens": d(0.5),
                    "vit_cls_cls": d(0.6), "vit_gap_gap": d(0.61), "seed_baseline": None},
        "data_scale": {"smallest_fraction": {"ViT": "3%"},
                       "reference": {"long": "zoo:vit-cls", "matched": "zoo:vit-cls-e3", "long_steps": 9380,
                                     "matched_steps": 1407, "small_steps": {"3%": 1500, "10%": 1410, "30%": 1410}},
                       "vit_long": {"cka_first_block": {"3%": d(0.9)}, "cka_last_block": {"3%": d(0.3)}},
                       "vit_matched": {"cka_first_block": {"3%": d(0.95)}, "cka_last_block": {"3%": d(0.4)}},
                       "seed_baseline": None,
                       "probe_mid_gain_points_long": {"vit": d(32.0)},
                       "probe_mid_gain_points_matched": {"vit": d(30.0)},
                       "probe_mid_vit_minus_resnet_points": d(5.0),
                       "probe_mid_vit_minus_resnet_points_cls": d(4.0)},
    }


def rows_of(results):
    return {r["finding"]: r for r in findings.table(results)}


def test_paper_like_numbers_reproduce_every_finding():
    rows = findings.table(paper_like())
    assert [r["finding"] for r in rows] == list(range(1, 13))
    assert all(r["verdict"] == findings.REPRODUCED for r in rows), [(r["finding"], r["checks"]) for r in rows]
    assert all(r["hypothesis"] == "" for r in rows)
    assert findings.tally(rows)[findings.REPRODUCED] == 12


def test_central_failure_is_not_reproduced_and_secondary_failure_is_partly():
    results = paper_like()
    rs = results["representation_structure"]
    rs["vit_low_high"], rs["resnet_low_high"] = d(0.3), d(0.8)              # the ResNet is the uniform one
    results["local_global"]["head_subset_rank_correlation"] = d(-0.2)      # negative but weak
    rows = rows_of(results)
    assert rows[1]["verdict"] == findings.NOT_REPRODUCED and rows[1]["hypothesis"]
    assert rows[5]["verdict"] == findings.PARTLY
    assert "-0.20" in rows[5]["measured"] or "−0.20" in rows[5]["measured"]


def test_a_criterion_must_hold_in_every_draw():
    results = paper_like()
    results["local_global"]["head_subset_rank_correlation"] = [-0.8, -0.7, -0.9, -0.6, +0.4]  # one draw flips sign
    assert rows_of(results)[5]["verdict"] == findings.NOT_REPRODUCED
    results["local_global"]["head_subset_rank_correlation"] = [-0.8, -0.7, -0.9, -0.6, -0.45]  # one draw above -0.5
    assert rows_of(results)[5]["verdict"] == findings.PARTLY


def test_no_local_heads_anywhere_is_untestable_not_partly():
    results = paper_like()
    lg = results["local_global"]
    lg["distances_all_data"] = copy.deepcopy(lg["distances_less_data"])    # near-uniform heads in both models
    rows = rows_of(results)
    for f in (3, 4, 5):
        assert rows[f]["verdict"] == findings.UNTESTABLE, f
        assert ("precondition", False) in [(k, met) for k, _, met, _ in rows[f]["checks"]]
    assert rows[6]["verdict"] == findings.REPRODUCED                       # ERFs do not need local heads


def test_local_heads_in_only_some_draws_are_not_a_precondition_met():
    results = paper_like()
    lg = results["local_global"]
    lg["distances_all_data"][2][0] = [13.5, 14.0, 15.0, 15.5]               # draw 2 has no local head
    assert rows_of(results)[3]["verdict"] == findings.UNTESTABLE


def test_unmatched_control_is_confounded():
    results = paper_like()
    results["skip_connections"]["control"] = {"name": "zoo:vit-cls", "steps": 9380}   # the long schedule
    results["data_scale"]["reference"]["matched"] = None
    results["data_scale"]["reference"]["matched_steps"] = None
    results["data_scale"]["vit_matched"] = None
    results["data_scale"]["probe_mid_gain_points_matched"] = None
    rows = rows_of(results)
    assert rows[8]["verdict"] == rows[11]["verdict"] == rows[12]["verdict"] == findings.CONFOUNDED
    assert rows[7]["verdict"] == findings.REPRODUCED
    assert "long-schedule" in rows[11]["measured"]


def test_counts_are_compared_as_integers_at_the_threshold():
    results = paper_like()
    sp = results["spatial"]
    sp["vit_cls"]["interior_own_patch_count"], sp["vit_gap"]["interior_own_patch_count"] = d(15), d(10)
    sp["resnet"]["interior_own_patch_count"] = d(10)
    # 15/25 - 10/25 is exactly 0.2 points; in floats 0.6 - 0.4 = 0.19999999999999996 < 0.2
    assert 15 / 25 - 10 / 25 < 0.2
    assert rows_of(results)[9]["verdict"] == findings.REPRODUCED
    sp["vit_cls"]["interior_own_patch_count"] = [15, 15, 15, 15, 14]
    assert rows_of(results)[9]["verdict"] == findings.NOT_REPRODUCED
    rs = results["representation_structure"]
    rs["vit_lowest_quarter_best_in_resnet_lower_half_count"] = d(6)       # 6 of 8 = 75%: meets ">= 75%"
    assert rows_of(results)[2]["verdict"] == findings.REPRODUCED
    rs["vit_lowest_quarter_best_in_resnet_lower_half_count"] = [6, 6, 5, 6, 6]
    assert rows_of(results)[2]["verdict"] == findings.NOT_REPRODUCED


def test_missing_chapter_is_not_measured_and_skip_chapter_without_no_skip_models_too():
    results = paper_like()
    del results["spatial"]
    results["skip_connections"]["no_skip"] = []
    rows = rows_of(results)
    assert rows[9]["verdict"] == rows[10]["verdict"] == rows[8]["verdict"] == findings.NOT_MEASURED
    assert rows[7]["verdict"] == rows[1]["verdict"] == findings.REPRODUCED


def test_a_missing_field_is_an_error_naming_chapter_and_field():
    results = paper_like()
    del results["spatial"]["vit_gap_tokens"]
    with pytest.raises(findings.MissingResult, match="chapter 'spatial' have no field 'vit_gap_tokens'"):
        findings.table(results)


def test_a_single_number_where_draws_are_expected_is_an_error():
    results = paper_like()
    results["spatial"]["vit_gap_tokens"] = 0.57
    with pytest.raises(TypeError, match="one value per draw"):
        findings.table(results)


def test_spread_matches_numpy_formulas():
    values = [0.81, 0.79, 0.85, 0.80, 0.83]
    s = findings.spread(values)
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert math.isclose(s.mean, mean) and math.isclose(s.sd, sd) and (s.min, s.max, s.n) == (0.79, 0.85, 5)
    assert findings.fmt(values) == f"{mean:.2f} ± {sd:.2f} (0.79–0.85, n = 5)"
    assert findings.pct([0.5, 0.6]) == "55.0 ± 7.1% (50.0–60.0%, n = 2)"
    assert findings.fmt([-0.001, 0.0005], 1, 100, " points") == "0.0 ± 0.1 points (-0.1 to 0.1 points, n = 2)"   # no "-0.0"
    assert findings.fmt([-0.84, -0.80]) == "-0.82 ± 0.03 (-0.84 to -0.80, n = 2)"
    with pytest.raises(findings.UndefinedValue, match="undefined draws"):
        findings.spread([0.1, None])


def test_an_undefined_recorded_value_makes_its_finding_not_measured_saying_why():
    results = paper_like()
    results["skip_connections"]["resnet_median_ratio"] = [None] * N          # inf: a zero residual branch
    row = rows_of(results)[7]
    assert row["verdict"] == findings.NOT_MEASURED and "undefined" in row["measured"]


def test_meaning_names_each_finding_of_the_chapter_with_its_verdict_and_labels_hypotheses():
    results = paper_like()
    results["local_global"]["distances_all_data"] = copy.deepcopy(results["local_global"]["distances_less_data"])
    text = findings.meaning("local_global", results)
    assert [line.split("**")[1] for line in text.splitlines()] == [f"Finding {n}" for n in (3, 4, 5, 6)]
    assert text.count(findings.UNTESTABLE) == 3 and "not tested here" in text
    assert "precondition is absent" in text


def test_record_and_load_round_trip(tmp_path):
    findings.record("chapter", {"t": torch.tensor([[1.0, 2.0]]), "x": 0.5, "nan": float("nan"),
                                "nested": {"a": torch.tensor(3)}}, tmp_path)
    loaded = findings.load_results(tmp_path)
    assert loaded == {"chapter": {"t": [[1.0, 2.0]], "x": 0.5, "nan": None, "nested": {"a": 3}}}
    assert not list(tmp_path.glob("*.tmp"))


def test_conclusion_text_shows_every_check_and_explains_every_finding_not_reproduced():
    results = paper_like()
    results["local_global"]["distances_all_data"] = copy.deepcopy(results["local_global"]["distances_less_data"])
    rows = findings.table(results)
    table = findings.markdown_table(rows)
    assert table.count("\n") == 13 and "✗ *precondition*" in table and "**untestable at this scale**" in table
    assert findings.tally_text(rows) == "Of 12 findings: 9 reproduced, 3 untestable at this scale."
    why = findings.explanations(rows).splitlines()
    assert [line.split("**")[1] for line in why] == ["Finding 3", "Finding 4", "Finding 5"]
    assert all("untested hypothesis" in line for line in why)


def test_untrained_models_without_step_counts_leave_the_controls_unmatched():
    results = paper_like()
    results["skip_connections"]["control"]["steps"] = None
    for row in results["skip_connections"]["no_skip"]:
        row["steps"] = None
    results["data_scale"]["reference"]["small_steps"]["3%"] = None
    rows = rows_of(results)
    assert rows[8]["verdict"] == rows[11]["verdict"] == rows[12]["verdict"] == findings.CONFOUNDED


def test_intro_outcome_table_lists_every_finding_with_its_verdict_and_the_tally(tmp_path):
    results = paper_like()
    results["local_global"]["distances_all_data"] = copy.deepcopy(results["local_global"]["distances_less_data"])
    rows = findings.table(results)
    path = findings.write_outcomes(rows, tmp_path)
    text = path.read_text()
    assert path.name == findings.OUTCOMES_FILE and findings.tally_text(rows) in text
    body = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert [int(line.split("|")[1]) for line in body] == list(range(1, 13))
    assert [line.rstrip(" |").rsplit("**", 2)[1] for line in body] == [r["verdict"] for r in rows]
    assert "| Local and global information |" in body[2]


def test_seed_baseline_adds_a_secondary_check_to_f11_and_f12():
    results = paper_like()
    dsc = results["data_scale"]
    dsc["seed_baseline"] = {"model": "zoo:vit-cls-s1", "reference": "zoo:vit-cls",
                            "cka_first_block": d(0.97), "cka_last_block": d(0.9), "cka_per_block": [[0.97, 0.9]] * 5,
                            "probe_mid_seed0_minus_seed1_points": d(-1.0),
                            "probe_mid_seed0_minus_seed1_points_cls": d(0.5)}
    rows = rows_of(results)
    assert rows[11]["verdict"] == rows[12]["verdict"] == findings.REPRODUCED
    assert sum("second seed" in rule for _, rule, _, _ in rows[11]["checks"]) == 1
    dsc["seed_baseline"]["cka_last_block"] = copy.deepcopy(dsc["vit_long"]["cka_last_block"]["3%"])  # no data effect
    dsc["seed_baseline"]["probe_mid_seed0_minus_seed1_points"] = d(-40.0)                             # seeds differ more
    rows = rows_of(results)
    assert rows[11]["verdict"] == rows[12]["verdict"] == findings.PARTLY


def test_spatial_criteria_hold_for_every_pairing_of_training_seeds():
    results = paper_like()
    sp = results["spatial"]
    sp["seed_baseline"] = {"vit_cls": {"model": "zoo:vit-cls-s1", "interior_own_patch_count": d(22),
                                       "tokens": d(0.12), "cls": d(0.6)},
                           "vit_gap": {"model": "zoo:vit-gap-s1", "interior_own_patch_count": d(9),
                                       "tokens": d(0.55), "gap": d(0.6)}}
    rows = rows_of(results)
    assert rows[9]["verdict"] == rows[10]["verdict"] == findings.REPRODUCED
    central = [(rule, value) for kind, rule, _, value in rows[9]["checks"] if kind == "central"][0]
    assert "all 4 pairings of their training seeds" in central[0] and "over 20 draws × seed pairings" in central[1]   # 4 pairings x 5 draws
    assert "; ViT-CLS seed 1 22.0 ± 0.0 tokens" in rows[9]["measured"]
    # seed 1 of the GAP model localises as well as the CLS model's seed 0 in one draw: the central criterion fails
    sp["seed_baseline"]["vit_gap"]["interior_own_patch_count"] = [9, 9, 9, 9, 23]
    assert rows_of(results)[9]["verdict"] == findings.NOT_REPRODUCED
    # the CLS model's second seed has good single tokens: F10's central criterion fails for that pairing
    sp["seed_baseline"]["vit_cls"]["tokens"] = d(0.5)
    assert rows_of(results)[10]["verdict"] == findings.NOT_REPRODUCED
    sp["seed_baseline"]["vit_cls"]["tokens"] = d(0.12)
    sp["seed_baseline"]["vit_gap"]["gap"] = d(0.7)          # CLS;CLS vs seed-1 GAP;GAP: 10 points apart
    assert rows_of(results)[10]["verdict"] == findings.PARTLY


def test_a_record_without_the_seed_field_is_an_error():
    results = paper_like()
    del results["spatial"]["seed_baseline"]
    with pytest.raises(findings.MissingResult, match="no field 'seed_baseline'"):
        findings.table(results)


def test_one_second_seed_pairs_it_with_the_single_seed_of_the_other_model():
    results = paper_like()
    sp = results["spatial"]
    sp["seed_baseline"] = {"vit_cls": {"model": "zoo:vit-cls-s1", "interior_own_patch_count": d(22),
                                       "tokens": d(0.12), "cls": d(0.6)}}
    rows = rows_of(results)
    assert rows[9]["verdict"] == rows[10]["verdict"] == findings.REPRODUCED
    central = [(rule, value) for kind, rule, _, value in rows[9]["checks"] if kind == "central"][0]
    assert "all 2 pairings" in central[0] and "over 10 draws × seed pairings" in central[1]
    assert "no second seed of ViT-GAP" in rows[9]["measured"] and "ViT-CLS seed 1 single tokens 12.0" in rows[10]["measured"]
    # without seeds the rules read as before: one pairing, per draw
    sp["seed_baseline"] = None
    rows = rows_of(results)
    central = [(rule, value) for kind, rule, _, value in rows[9]["checks"] if kind == "central"][0]
    assert central == ("ViT-CLS ≥ 20 points above ViT-GAP (5·(CLS − GAP) ≥ tokens)", "50 over 5 draws")   # 5·(23 − 8) − 25
    assert "one training seed per model" in rows[9]["measured"]


def test_seeds_with_another_number_of_draws_are_an_error():
    results = paper_like()
    results["spatial"]["seed_baseline"] = {"vit_cls": {"model": "m", "interior_own_patch_count": [22, 22],
                                                       "tokens": [0.1, 0.1], "cls": [0.6, 0.6]}}
    with pytest.raises(ValueError, match="paired quantities have"):
        findings.table(results)

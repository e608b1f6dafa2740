"""The conclusion's verdicts follow from recorded numbers by the stated rules: intervals over training seeds and
image draws, every verdict category on synthetic results, direction separated from size, and verdicts that more
draws do not make harsher."""
import copy
import math
import random
import statistics

import pytest

from vitcnn_utils import findings
from vitcnn_utils.findings import FAILS, HOLDS, UNDECIDED

N = 5


def d(*values):
    """Per-draw values: one number repeated over N draws, or the values given."""
    return list(values) * N if len(values) == 1 else list(values)


def distances(block0, last, draws=N):
    return [[list(block0), [14.0, 14.5, 15.0, 16.0], list(last)] for _ in range(draws)]


def paper_like():
    """Numbers shaped like the paper's results, 5 draws each, one training seed: every criterion holds."""
    u = 14.4
    return {
        "representation_structure": {"seeds": list(range(N)), "vit_low_high": d(0.8, 0.82, 0.79, 0.81, 0.8),
                                     "resnet_low_high": d(0.3), "vit_low_high_blocks": d(0.85),
                                     "resnet_low_high_blocks": d(0.35),
                                     "vit_lowest_quarter_best_in_resnet_lower_half_count": d(8),
                                     "vit_lowest_quarter_layers": 8, "resnet_lower_half_layers": 20,
                                     "resnet_layers": 40, "max_cka_vit_last_third": d(0.4)},
        "local_global": {"seeds": list(range(N)), "uniform_distance": u,
                         "distances_all_data": distances([3.0, 6.0, 14.0, 15.0], [14.0, 14.2, 15.0, 16.0]),
                         "distances_less_data": distances([13.5, 14.0, 15.0, 15.5], [14.0, 14.5, 15.0, 16.0]),
                         "head_subset_rank_correlation": d(-0.8, -0.6, -0.9, -0.7, -0.8),
                         "erf_radius": {"ViT blocks.0": d(5.0), "ViT blocks.2": d(10.5), "ViT blocks.5": d(11.0),
                                        "ResNet layer1.0": d(2.0), "ResNet layer2.1": d(4.0),
                                        "ResNet layer4.0": d(7.0)},
                         "uniform_erf_radius": 11.0,
                         "vit_erf_layers": ["blocks.0", "blocks.2", "blocks.5"],
                         "resnet_erf_layers": ["layer1.0", "layer2.1", "layer4.0"]},
        "skip_connections": {"seeds": list(range(N)), "cls_ratio_first_half": d(20.0), "spatial_ratio_first_half": d(3.0),
                             "cls_ratio_second_half": d(2.0), "spatial_ratio_second_half": d(5.0),
                             "vit_median_ratio": d(6.0), "resnet_median_ratio": d(1.5),
                             "control": {"name": "zoo:vit-cls-e3", "steps": 1407},
                             "no_skip": [{"block": b, "depth_fraction": b / 5, "steps": 1407,
                                          "split_cka_intact": d(0.8), "split_cka_no_skip": d(0.3),
                                          "accuracy_drop": d(0.045)} for b in (1, 3, 5)]},
        "spatial": {"seeds": list(range(N)), "vit_cls": {"interior_own_patch_count": d(23), "interior_tokens": 25},
                    "vit_gap": {"interior_own_patch_count": d(8), "interior_tokens": 25},
                    "resnet": {"interior_own_patch_count": d(5), "interior_tokens": 25},
                    "vit_cls_tokens": d(0.1), "vit_gap_tokens": d(0.57), "resnet_tokens": d(0.5),
                    "vit_cls_cls": d(0.6), "vit_gap_gap": d(0.61)},
        "data_scale": {"seeds": list(range(N)), "smallest_fraction": {"ViT": "3%"},
                       "models": {"ViT": {"3%": "zoo:vit-cls-f03", "100%, matched steps": "zoo:vit-cls-e3"}},
                       "training": {"ViT": {"3%": {"test_accuracy": 0.78}, "100%, matched steps": {"test_accuracy": 0.85}}},
                       "reference": {"long": "zoo:vit-cls", "matched": "zoo:vit-cls-e3", "long_steps": 9380,
                                     "matched_steps": 1407, "small_steps": {"3%": 1500}},
                       "vit_matched_other_seed": {"baseline": {"cka_first_block": d(0.97), "cka_last_block": d(0.9)},
                                                  "cka": {"3%": {"cka_first_block": d(0.95),
                                                                 "cka_last_block": d(0.5)}}},
                       "probe_mid_gain_points_long": {"vit": d(32.0)},
                       "probe_mid_gain_points_matched": {"vit": d(31.0)},
                       "probe_mid_vit_minus_resnet_points": d(5.0)},
    }


def rows_of(results):
    return {r["finding"]: r for r in findings.table(results)}


def with_second_seed(results, chapter, **changes):
    """``results`` with a replicate of ``chapter`` (its second training seed): a copy with ``changes`` applied."""
    rec = results[chapter]
    twin = copy.deepcopy(rec)
    twin.update(changes)
    rec["replicates"] = [twin]
    return results


# -- intervals --------------------------------------------------------------------------------------------------

def test_t_quantiles_match_tables():
    for df, q in ((1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (9, 2.2621572), (30, 2.0422725), (1000, 1.9623391)):
        assert findings.t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    assert findings.t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-9)
    assert findings.t_quantile(0.025, 7) == pytest.approx(-findings.t_quantile(0.975, 7), abs=1e-9)


def test_interval_is_the_union_of_each_seeds_t_interval():
    a, b = [0.1, 0.2, 0.15, 0.12, 0.18], [0.3, 0.35, 0.32]
    iv = findings.interval([a, b])
    h = lambda v: findings.t_quantile(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))  # noqa: E731
    assert iv.low == pytest.approx(statistics.fmean(a) - h(a), abs=1e-12)
    assert iv.high == pytest.approx(statistics.fmean(b) + h(b), abs=1e-12)
    assert iv.mean == pytest.approx((statistics.fmean(a) + statistics.fmean(b)) / 2)
    assert iv.n_seeds == 2 and iv.n_draws == 3


def test_decide_holds_fails_and_straddles():
    iv = findings.interval([[0.2, 0.3, 0.25]])
    assert findings.decide(iv, ">", 0.0) == HOLDS
    assert findings.decide(iv, "<", 0.0) == FAILS
    assert findings.decide(iv, ">", 0.25) == UNDECIDED
    assert findings.decide(iv, "within", (-0.5, 0.5)) == HOLDS
    assert findings.decide(iv, "within", (0.5, 0.6)) == FAILS
    with pytest.raises(ValueError, match="unknown side"):
        findings.decide(iv, "=>", 0.0)


def test_more_draws_from_the_same_distribution_never_undo_a_decided_criterion():
    rng = random.Random(0)
    for trial in range(200):
        mu, sd = rng.uniform(-1, 1), rng.uniform(0.01, 0.5)
        few = [[rng.gauss(mu, sd) for _ in range(5)] for _ in range(2)]
        state = findings.decide(findings.interval(few), ">", 0.0)
        # the same draws three times over: the same means and spreads from more draws
        many = [v * 3 for v in few]
        assert findings.interval(many).high - findings.interval(many).low <= \
            findings.interval(few).high - findings.interval(few).low + 1e-12
        if state != UNDECIDED:
            assert findings.decide(findings.interval(many), ">", 0.0) == state


def test_one_draw_below_the_threshold_no_longer_fails_a_criterion_whose_interval_clears_it():
    # the old "holds in every draw" gate failed this; the interval of the mean clears 0
    values = [[0.3, 0.28, 0.31, -0.01, 0.29, 0.3, 0.27, 0.33, 0.3, 0.29]]
    assert findings.decide(findings.interval(values), ">", 0.0) == HOLDS


# -- verdicts ---------------------------------------------------------------------------------------------------

def test_paper_like_numbers_reproduce_every_finding():
    rows = findings.table(paper_like())
    assert [r["finding"] for r in rows] == list(range(1, 13))
    assert all(r["verdict"] == findings.REPRODUCED for r in rows), [(r["finding"], r["verdict"], r["checks"])
                                                                    for r in rows if r["verdict"] != "reproduced"]
    assert all(r["hypothesis"] == "" for r in rows)


def test_direction_without_the_papers_size_is_direction_only():
    results = paper_like()
    results["spatial"]["vit_cls"]["interior_own_patch_count"] = d(12, 13, 12, 12, 13)   # CLS − GAP ≈ 18 points
    rows = rows_of(results)
    assert rows[9]["verdict"] == findings.DIRECTION_ONLY
    results["spatial"]["vit_cls_tokens"] = d(0.4)                                      # GAP − CLS = 17 points < 45
    assert rows_of(results)[10]["verdict"] == findings.DIRECTION_ONLY


def test_an_effect_within_the_seed_noise_is_not_distinguishable():
    results = paper_like()
    results["spatial"]["vit_cls"]["interior_own_patch_count"] = d(10)                  # CLS − GAP = +8 points
    with_second_seed(results, "spatial", vit_cls={"interior_own_patch_count": d(7), "interior_tokens": 25})
    assert rows_of(results)[9]["verdict"] == findings.NOT_DISTINGUISHABLE               # seed 1: −4 points


def test_an_effect_beyond_the_noise_on_the_other_side_is_opposite():
    results = paper_like()
    results["representation_structure"]["vit_low_high"] = d(0.1, 0.12, 0.11, 0.1, 0.1)
    row = rows_of(results)[1]
    assert row["verdict"] == findings.OPPOSITE
    assert "wrong side" in findings.explanations([row])


def test_a_level_claim_below_its_level_is_not_reproduced_and_f3_says_why():
    results = paper_like()
    u = results["local_global"]["uniform_distance"]
    results["local_global"]["distances_all_data"] = distances([0.97 * u, 0.98 * u, u, u], [14.0, 14.2, 15.0, 16.0])
    rows = rows_of(results)
    assert rows[3]["verdict"] == findings.NOT_REPRODUCED
    assert "Fig 4" in rows[3]["measured"]
    assert rows[4]["verdict"] == rows[5]["verdict"] == findings.UNTESTABLE      # their precondition


def test_a_second_seed_widens_the_interval_to_the_seed_spread():
    results = with_second_seed(paper_like(), "spatial",
                               vit_cls={"interior_own_patch_count": d(12), "interior_tokens": 25})
    row = rows_of(results)[9]
    central = next(c for c in row["checks"] if c[0] == "central")
    assert central[2] == HOLDS and "[" in central[3]
    size = next(c for c in row["checks"] if c[0] == "size")
    assert size[2] == UNDECIDED                                                 # seed 1: 16 points, seed 0: 60
    assert row["verdict"] == findings.DIRECTION_ONLY
    assert "2 training seeds" in row["measured"]


def test_unmatched_steps_or_a_less_accurate_matched_reference_is_confounded():
    results = paper_like()
    results["skip_connections"]["control"]["steps"] = 9380
    assert rows_of(results)[8]["verdict"] == findings.CONFOUNDED
    results = paper_like()
    results["data_scale"]["training"]["ViT"]["100%, matched steps"]["test_accuracy"] = 0.70
    row = rows_of(results)[12]
    assert row["verdict"] == findings.CONFOUNDED and "limit it" in findings._why(row)


def test_f11_is_a_data_effect_beyond_the_seed_baseline():
    results = paper_like()
    ds = results["data_scale"]["vit_matched_other_seed"]
    ds["cka"]["3%"]["cka_last_block"] = d(0.9)          # as similar as two 100% seeds: no data effect
    assert rows_of(results)[11]["verdict"] in (findings.NOT_DISTINGUISHABLE, findings.OPPOSITE)
    results["data_scale"]["vit_matched_other_seed"] = None          # no second seed of the matched reference
    row = rows_of(results)[11]
    assert row["verdict"] == findings.NOT_MEASURED and "seed baseline" in row["not_measured"]


def test_missing_chapter_is_not_measured_and_skip_chapter_without_no_skip_models_too():
    results = paper_like()
    del results["spatial"]
    results["skip_connections"]["no_skip"] = []
    rows = rows_of(results)
    assert rows[9]["verdict"] == rows[10]["verdict"] == rows[8]["verdict"] == findings.NOT_MEASURED


def test_a_missing_field_is_an_error_naming_chapter_and_field():
    results = paper_like()
    del results["representation_structure"]["resnet_low_high"]
    with pytest.raises(findings.MissingResult, match="representation_structure.*resnet_low_high"):
        findings.table(results)


def test_a_single_number_where_draws_are_expected_is_an_error():
    results = paper_like()
    results["representation_structure"]["vit_low_high"] = 0.8
    with pytest.raises(findings.RecordTypeError, match=r"vit_low_high .* should be list\[float\] \(one value per draw\), got float"):
        findings.table(results)


def test_an_undefined_recorded_value_makes_its_finding_not_measured_saying_why():
    results = paper_like()
    results["skip_connections"]["resnet_median_ratio"] = d(None)
    row = rows_of(results)[7]
    assert row["verdict"] == findings.NOT_MEASURED and "undefined" in row["not_measured"]


def test_every_threshold_states_its_origin_and_the_table_shows_it():
    rows = findings.table(paper_like())
    for r in rows:
        for kind, rule, state, value, origin in r["checks"]:
            if kind in ("size", "central", "precondition") and "0.0" not in rule:
                assert origin, (r["finding"], rule)
    text = findings.markdown_table(rows)
    assert "the paper (Fig 11" in text and "this project's reading" in text


def test_meaning_names_each_finding_of_the_chapter_with_its_verdict_and_labels_hypotheses():
    results = paper_like()
    results["representation_structure"]["vit_low_high"] = d(0.1, 0.12, 0.11, 0.1, 0.1)
    text = findings.meaning("representation_structure", results)
    assert "**Finding 1**" in text and "**Finding 2**" in text and "*not tested here*" in text


def test_takeaway_gives_each_finding_of_the_chapter_its_verdict_and_central_number():
    results = paper_like()
    rows = {r["finding"]: r for r in findings.table(results, "representation_structure")}
    text = findings.takeaway("representation_structure", results)
    assert text.startswith("**In short.**") and text.count("\n- ") == 2
    for number, row in rows.items():
        assert f"(Finding {number}, {row['figure']}): **{row['verdict']}** ({row['judged']['central'].value})" in text
    assert "Finding 3" not in text                                   # another chapter's finding
    assert "not measured" in findings.takeaway("spatial", {})


def test_record_and_load_round_trip_with_replicates(tmp_path):
    findings.record("spatial", {"a": [1.0, float("nan")]}, tmp_path, replicates=[{"a": [2.0, 3.0]}])
    loaded = findings.load_results(tmp_path)
    assert loaded == {"spatial": {"a": [1.0, None], "replicates": [{"a": [2.0, 3.0]}]}}


def test_intro_summary_names_every_finding_under_its_verdict_with_the_tally(tmp_path):
    results = paper_like()
    results["spatial"]["vit_cls"]["interior_own_patch_count"] = d(12, 13, 12, 12, 13)   # F9: direction only
    rows = findings.table(results)
    text = findings.write_outcomes(rows, tmp_path).read_text()
    assert "Of 12 findings: 11 reproduced, 1 direction only." in text
    assert text.count("(Finding ") == 12
    direction = next(line for line in text.splitlines() if line.startswith("- **The paper's direction"))
    assert "(Finding 9, Figs 9–10: " in direction and "points [" in direction
    assert all(v in findings.vocabulary() for v in findings.VERDICTS)


def test_the_summary_figure_draws_every_finding(tmp_path):
    from vitcnn_utils import plotting
    results = paper_like()
    del results["spatial"]                                       # a not-measured row has no interval
    fig = plotting.findings_forest(findings.table(results))
    assert len(fig.axes) == 12
    assert fig.axes[8].texts and "no results from spatial" in fig.axes[8].texts[0].get_text()
    plotting.save(fig, "summary", tmp_path)


def test_verdicts_tool_compares_two_builds(tmp_path, capsys):
    """`python -m vitcnn_utils.tools.verdicts A B` prints both builds' verdicts and exits 1 when one differs."""
    from vitcnn_utils.tools import verdicts
    row = {"finding": 1, "verdict": findings.REPRODUCED, "checks": [("central", "r", findings.HOLDS, "0.2", "paper")]}
    lines, differ = verdicts.compare([row], [dict(row)])
    assert differ == 0 and "same" in lines[0] and "holds (0.2)" in lines[0]
    lines, differ = verdicts.compare([row], [{**row, "verdict": findings.DIRECTION_ONLY}])
    assert differ == 1 and "DIFFERS" in lines[0]
    (tmp_path / "a").mkdir()
    verdicts.main([str(tmp_path / "a")])                        # nothing recorded: every finding not measured
    assert capsys.readouterr().out.count(findings.NOT_MEASURED) == len(findings.FINDINGS)
    with pytest.raises(SystemExit, match="no such results folder"):
        verdicts.main([str(tmp_path / "absent")])
    with pytest.raises(SystemExit) as stop:
        verdicts.main([str(tmp_path / "a"), str(tmp_path / "a")])
    assert stop.value.code == 0


def test_synthesis_groups_the_claims_by_what_this_build_shows():
    rows = [{"finding": 1, "paper": "a claim", "verdict": findings.DIRECTION_ONLY},
            {"finding": 2, "paper": "b claim", "verdict": findings.OPPOSITE},
            {"finding": 3, "paper": "c claim", "verdict": findings.UNTESTABLE}]
    text = findings.synthesis(rows)
    assert "beyond the noise between trainings.** A claim (Finding 1: direction only)." in text
    assert "other way.** B claim (Finding 2: opposite)." in text and "judged here.** C claim" in text
    assert "hides" not in text                                      # no finding in that group: no heading


# -- typed records ----------------------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402

from vitcnn_utils.evidence import ChapterRecord  # noqa: E402


@dataclass(frozen=True)
class _Inner:
    block: int
    values: list[float]


@dataclass(frozen=True)
class _Toy(ChapterRecord):
    seeds: list[int]
    rows: list[_Inner]
    by_name: dict[str, _Inner | None]
    maybe: list[float] | None
    name: str


def _toy(**changes):
    return {"seeds": [0, 1], "rows": [{"block": 1, "values": [0.5, None], "extra": "ignored"}],
            "by_name": {"a": {"block": 2, "values": [1, 2.5]}, "b": None}, "maybe": None, "name": "x",
            "figure_only": [[1, 2]], **changes}


def test_a_typed_record_reads_declared_fields_with_their_types_and_replicates():
    rec = _Toy.from_json({**_toy(), "replicates": [_toy(name="twin")]}, "toy")
    assert rec.chapter == "toy" and rec.seeds == [0, 1] and rec.name == "x" and rec.maybe is None
    assert rec.rows[0] == _Inner(1, [0.5, rec.rows[0].values[1]]) and math.isnan(rec.rows[0].values[1])  # None: NaN
    assert rec.by_name["a"] == _Inner(2, [1.0, 2.5]) and isinstance(rec.by_name["a"].values[0], float)
    assert rec.by_name["b"] is None and not hasattr(rec, "figure_only")          # figure data is not read
    assert [r.name for r in findings.replicates(rec)] == ["x", "twin"] and rec.replicates[0].replicates == ()
    with pytest.raises(findings.UndefinedValue):                                  # NaN never reaches a verdict
        findings.draws(rec.rows[0].values)


@pytest.mark.parametrize("changes, error, message", [
    ({"rows": [{"values": [1.0]}]}, findings.MissingResult, r"'toy' have no field 'rows\[0\]\.block'"),
    ({"rows": [{"block": 1.0, "values": [1.0]}]}, findings.RecordTypeError, r"rows\[0\]\.block .* should be int"),
    ({"rows": [{"block": True, "values": [1.0]}]}, findings.RecordTypeError, "should be int, got bool"),
    ({"by_name": {"a": [1]}}, findings.RecordTypeError, r"by_name\['a'\] .* should be a mapping of _Inner"),
    ({"seeds": "01"}, findings.RecordTypeError, r"seeds .* should be list\[int\], got str"),
    ({"name": None}, findings.RecordTypeError, "name .* should be str, got NoneType"),
])
def test_a_typed_record_names_the_field_that_is_missing_or_of_another_type(changes, error, message):
    with pytest.raises(error, match=message):
        _Toy.from_json(_toy(**changes), "toy")
    del_seeds = {k: v for k, v in _toy().items() if k != "seeds"}
    with pytest.raises(findings.MissingResult, match="no field 'seeds'.*_Toy"):
        _Toy.from_json(del_seeds, "toy")


def test_every_finding_reads_its_chapters_typed_record():
    for f in findings.FINDINGS:
        module = __import__(f"vitcnn_utils.chapters.{f.chapter}", fromlist=["Record"])
        assert f.record is module.Record and issubclass(f.record, ChapterRecord)

"""The measured numbers behind the book's conclusion, and the rules that judge the paper's findings.

Each chapter records the numbers its text reports with :func:`record` (one JSON file per chapter in the
results folder, written atomically); the conclusion reads them all with :func:`load_results` and judges each of the
paper's twelve findings with the rules in :data:`FINDINGS`, so the verdict table always follows from what this
build computed.

**Draws.** Every number a verdict uses is recorded as a list over independent draws of analysis images (and
probe shots): ``[value of draw 0, value of draw 1, ...]``. :func:`spread` summarises one (mean ± SD, range).

**Rules.** A finding declares

* *preconditions*: what must exist for the claim to be testable at all (e.g. a local attention head for a
  claim about local heads); one absent makes the finding **untestable at this scale**;
* *controls*: comparisons the claim needs matched (equal optimisation steps, the same readout); one unmatched
  makes it **confounded**;
* a *central criterion*, which must hold for anything better than **not reproduced**, and *secondary
  criteria*: all hold = **reproduced**, the central one holds and a secondary one does not = **partly**.

A criterion is met only when it holds in *every* draw (the whole range clears the threshold); counts are
compared as integers, so no verdict turns on float rounding. A chapter that did not run gives **not
measured**; a chapter whose record lacks a field the rule reads is an error (:class:`MissingResult`), never a
silent "not measured". The thresholds were chosen by this project when the chapters were written; they are
stated beside every verdict, and the book's history shows they were set after first results were seen.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS_DIR = "book/chapters/results"

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
UNTESTABLE, CONFOUNDED, NOT_MEASURED = "untestable at this scale", "confounded", "not measured"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, UNTESTABLE, CONFOUNDED, NOT_MEASURED)
LOCAL_HEAD, GLOBAL_HEAD = 0.75, 0.9   # a head is local below 0.75x, global above 0.9x the uniform-attention distance
F8_ACCURACY_DROP = 0.02   # F8's secondary criterion: accuracy lost at the middle block (fraction; the paper: about 4%)
F11_FIRST_BLOCK = 0.8     # F11's central criterion: first-block CKA of the least-data ViT with the 100% model
# (the chapters' figures draw these same constants as their reference lines)


# --------------------------------------------------------------------------------------------------------
# Recording and loading

def _plain(value):
    """JSON-able copy of ``value`` (tensors and NumPy scalars/arrays become numbers and lists)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(chapter: str, values: dict, folder: str | os.PathLike = RESULTS_DIR) -> Path:
    """Write ``values`` (numbers, strings, lists, tensors) as ``folder/<chapter>.json``; returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain(values), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_results(folder: str | os.PathLike = RESULTS_DIR) -> dict[str, dict]:
    """``{chapter: values}`` for every chapter recorded in ``folder``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


# --------------------------------------------------------------------------------------------------------
# Spreads over draws

@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (0 for one draw), smallest and largest value of ``n`` draws."""
    mean: float
    sd: float
    min: float
    max: float
    n: int

    def text(self, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
        """``"0.83 ± 0.02 (0.80–0.85, n = 5)"``; ``scale=100, unit="%"`` for fractions as percentages:
        ``"55.0 ± 7.1% (50.0–60.0%, n = 2)"``; a range with a negative end reads ``(-0.84 to -0.80, ...)``."""
        def num(x: float) -> str:          # a value that rounds to zero reads 0.00, not -0.00
            text = f"{x:.{digits}f}"
            return f"{0.0:.{digits}f}" if float(text) == 0 else text
        m, s, lo, hi = (scale * v for v in (self.mean, self.sd, self.min, self.max))
        if self.n == 1:
            return f"{num(m)}{unit} (1 draw)"
        low, high = num(lo), num(hi)
        to = " to " if low.startswith("-") or high.startswith("-") else "–"   # "-0.84 to -0.80", not "-0.84–-0.80"
        return f"{num(m)} ± {num(s)}{unit} ({low}{to}{high}{unit}, n = {self.n})"


class UndefinedValue(ValueError):
    """A recorded quantity is undefined (NaN/inf, recorded as ``None``) for the models of this build, e.g. an
    infinite skip ratio where a residual branch is exactly zero in an untrained ResNet."""


def draws(values, what: str = "value") -> list[float]:
    """``values`` as a non-empty list of finite numbers (one per draw); an error naming ``what`` otherwise."""
    if isinstance(values, (int, float)):
        raise TypeError(f"{what} is a single number ({values}); record one value per draw (a list)")
    values = list(values)
    if not values:
        raise ValueError(f"{what} has no draws")
    if any(v is None or not math.isfinite(v) for v in values):
        raise UndefinedValue(f"{what} has undefined draws: {values}")
    return [float(v) for v in values]


def spread(values, what: str = "value") -> Spread:
    """:class:`Spread` of a list of per-draw values."""
    v = draws(values, what)
    return Spread(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, min(v), max(v), len(v))


def fmt(values, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """The text of :func:`spread` (see :meth:`Spread.text`)."""
    return spread(values).text(digits, scale, unit)


def pct(values, digits: int = 1) -> str:
    """Fractions in [0, 1] over draws as percentages with their spread."""
    return fmt(values, digits, 100.0, "%")


def diff(a, b) -> list[float]:
    """Per-draw difference ``a[d] − b[d]`` of two quantities measured on the same draws."""
    a, b = draws(a), draws(b)
    if len(a) != len(b):
        raise ValueError(f"paired quantities have {len(a)} and {len(b)} draws")
    return [x - y for x, y in zip(a, b)]


# --------------------------------------------------------------------------------------------------------
# Checks and verdicts

@dataclass(frozen=True)
class Check:
    """One precondition, control or criterion: what must hold (``rule``), whether it holds in every draw
    (``met``), and the measured value with its spread (``value``)."""
    rule: str
    met: bool
    value: str = ""


def every(values, predicate: Callable[[float], bool]) -> bool:
    """Whether ``predicate`` holds for every draw of ``values``."""
    return all(predicate(v) for v in draws(values))


def check(rule: str, values, predicate: Callable[[float], bool], digits: int = 2, scale: float = 1.0,
          unit: str = "") -> Check:
    """A criterion on per-draw ``values``: met when ``predicate`` holds in every draw."""
    return Check(rule, every(values, predicate), fmt(values, digits, scale, unit))


def count_check(rule: str, counts: Sequence[int], predicate: Callable[[int], bool], what: str = "draws") -> Check:
    """A criterion on integer counts, one per draw (``what`` names them otherwise, e.g. one per draw and
    pairing of training seeds), compared as integers."""
    counts = [int(c) for c in counts]
    if not counts:
        raise ValueError(f"{rule}: no draws")
    lo, hi = min(counts), max(counts)
    value = f"{lo}" if lo == hi else f"{lo}{' to ' if lo < 0 or hi < 0 else '–'}{hi}"
    return Check(rule, all(predicate(c) for c in counts), f"{value} over {len(counts)} {what}")


@dataclass(frozen=True)
class Judgement:
    """What a rule found: the measured text, and its checks. ``not_measured`` (a reason) overrides all."""
    measured: str
    central: Check | None = None
    secondary: tuple[Check, ...] = ()
    preconditions: tuple[Check, ...] = ()
    controls: tuple[Check, ...] = ()
    not_measured: str = ""

    @property
    def verdict(self) -> str:
        if self.not_measured:
            return NOT_MEASURED
        if not all(c.met for c in self.preconditions):
            return UNTESTABLE
        if not all(c.met for c in self.controls):
            return CONFOUNDED
        if not self.central.met:
            return NOT_REPRODUCED
        return REPRODUCED if all(c.met for c in self.secondary) else PARTLY


class MissingResult(KeyError):
    """A chapter's record lacks a field that a finding's rule reads (the chapter and the rules disagree)."""


class _Record(dict):
    """A chapter's recorded values; a missing field raises :class:`MissingResult` naming chapter and field."""

    def __init__(self, chapter: str, values: dict):
        super().__init__(values)
        self.chapter = chapter

    def __missing__(self, key):
        raise MissingResult(f"the results of chapter {self.chapter!r} have no field {key!r}: rerun the chapter "
                            f"(python -m vitcnn_utils.tools.book -c {self.chapter}) or update vitcnn_utils.findings")


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings: where it is measured, what the paper reports, and its rule.
    ``judge(values)`` gets the chapter's recorded values and returns a :class:`Judgement`. ``hypothesis`` is a
    possible explanation of a difference at this project's scale: an *untested* hypothesis, shown as such."""
    number: int
    figure: str
    chapter: str
    paper: str
    judge: Callable[[dict], Judgement]
    hypothesis: str = ""


# --------------------------------------------------------------------------------------------------------
# The rules, one per finding

def _heads(distances_draws, uniform: float, block: int, kind: str) -> list[int]:
    """Per draw, how many heads of ``block`` are local (< LOCAL_HEAD × uniform) or global (> GLOBAL_HEAD ×)."""
    if kind == "local":
        return [sum(d < LOCAL_HEAD * uniform for d in draw[block]) for draw in distances_draws]
    return [sum(d > GLOBAL_HEAD * uniform for d in draw[block]) for draw in distances_draws]


def _f1(v):
    d_all = diff(v["vit_low_high"], v["resnet_low_high"])
    d_blocks = diff(v["vit_low_high_blocks"], v["resnet_low_high_blocks"])
    return Judgement(
        f"lowest vs highest quarter of the layers, mean CKA: ViT {fmt(v['vit_low_high'])}, ResNet "
        f"{fmt(v['resnet_low_high'])}; block outputs only: ViT {fmt(v['vit_low_high_blocks'])}, ResNet "
        f"{fmt(v['resnet_low_high_blocks'])}",
        central=check("ViT's low-vs-high CKA above the ResNet's (all layers)", d_all, lambda x: x > 0),
        secondary=(check("by at least 0.1", d_all, lambda x: x >= 0.1),
                   check("ViT above the ResNet on block outputs only", d_blocks, lambda x: x > 0)))


def _f2(v):
    total = int(v["vit_lowest_quarter_layers"])
    counts = v["vit_lowest_quarter_best_in_resnet_lower_half_count"]
    return Judgement(
        f"ViT lowest-quarter layers best matched in the ResNet's lower half: "
        f"{count_check('', counts, lambda c: True).value.replace(' over', f' of {total}, over')}; best CKA of the "
        f"ViT's last third with any ResNet layer {fmt(v['max_cka_vit_last_third'])}",
        central=count_check(f"≥ 75% of the ViT's {total} lowest-quarter layers match best in the ResNet's lower half",
                            counts, lambda c: 4 * c >= 3 * total),
        secondary=(check("max CKA of the ViT's last third with the ResNet < 0.5", v["max_cka_vit_last_third"],
                         lambda x: x < 0.5),))


def _local_precondition(v, key="distances_all_data"):
    local0 = _heads(v[key], v["uniform_distance"], 0, "local")
    return count_check(f"the 100% ViT has a local head (< {LOCAL_HEAD}× uniform) in block 0", local0, lambda c: c >= 1)


def _distance_text(v):
    u = v["uniform_distance"]
    first = [h for draw in v["distances_all_data"] for h in draw[0]]
    return f"block-0 head distances {min(first):.1f}–{max(first):.1f} px over all draws (uniform attention {u:.1f} px)"


def _f3(v):
    u, dist = v["uniform_distance"], v["distances_all_data"]
    local0, global0 = _heads(dist, u, 0, "local"), _heads(dist, u, 0, "global")
    local_last = _heads(dist, u, -1, "local")
    return Judgement(
        f"block 0: {min(local0)}–{max(local0)} local and {min(global0)}–{max(global0)} global of {len(dist[0][0])} "
        f"heads; last block: {min(local_last)}–{max(local_last)} local; {_distance_text(v)}",
        preconditions=(_local_precondition(v),),
        central=count_check("block 0 has both a local and a global head",
                            [min(a, b) for a, b in zip(local0, global0)], lambda c: c >= 1),
        secondary=(count_check("the last block has no local head", local_last, lambda c: c == 0),))


def _f4(v):
    u = v["uniform_distance"]
    full, small = _heads(v["distances_all_data"], u, 0, "local"), _heads(v["distances_less_data"], u, 0, "local")
    return Judgement(
        f"local block-0 heads: {min(full)}–{max(full)} with all data, {min(small)}–{max(small)} with 3% of it",
        preconditions=(_local_precondition(v),),
        central=count_check("fewer local block-0 heads in the 3% model than in the 100% model",
                            [f - s for f, s in zip(full, small)], lambda c: c >= 1),
        secondary=(count_check("none in the 3% model", small, lambda c: c == 0),))


def _f5(v):
    rho = v["head_subset_rank_correlation"]
    return Judgement(
        f"rank correlation of a block-0 head's distance with its CKA to low ResNet layers {fmt(rho)}; "
        f"{_distance_text(v)}",
        preconditions=(_local_precondition(v),),
        central=check("negative", rho, lambda x: x < 0),
        secondary=(check("≤ −0.5", rho, lambda x: x <= -0.5),))


def _f6(v):
    radius = v["erf_radius"]
    vit = [radius[f"ViT {layer}"] for layer in v["vit_erf_layers"]]
    res = [radius[f"ResNet {layer}"] for layer in v["resnet_erf_layers"]]
    steps = [diff(b, a) for a, b in zip(res, res[1:])]
    return Judgement(
        "half-mass radius (px), low / mid / high: ViT " + "; ".join(fmt(x, 1) for x in vit)
        + " — ResNet " + "; ".join(fmt(x, 1) for x in res),
        central=check("ViT radius above the ResNet's at low depth", diff(vit[0], res[0]), lambda x: x > 0, 1),
        secondary=(check("and at mid depth", diff(vit[1], res[1]), lambda x: x > 0, 1),
                   Check("ResNet radius grows with depth", all(every(s, lambda x: x >= 0) for s in steps),
                         "; ".join(fmt(s, 1) for s in steps))))


def _f7(v):
    first = diff(v["cls_ratio_first_half"], v["spatial_ratio_first_half"])
    second = diff(v["cls_ratio_second_half"], v["spatial_ratio_second_half"])
    vit_over_res = [a / b for a, b in zip(draws(v["vit_median_ratio"]), draws(v["resnet_median_ratio"]))]
    return Judgement(
        f"skip ratio ‖z‖/‖f(z)‖, first half: CLS {fmt(v['cls_ratio_first_half'])} vs patches "
        f"{fmt(v['spatial_ratio_first_half'])}; second half: CLS {fmt(v['cls_ratio_second_half'])} vs patches "
        f"{fmt(v['spatial_ratio_second_half'])}; median ViT {fmt(v['vit_median_ratio'])}, ResNet "
        f"{fmt(v['resnet_median_ratio'])}",
        central=check("CLS ratio above the patch tokens' in the first half", first, lambda x: x > 0),
        secondary=(check("below them in the second half", second, lambda x: x < 0),
                   check("ViT median ratio ≥ 2× the ResNet's", vit_over_res, lambda x: x >= 2)))


def _f8(v):
    rows, control = v["no_skip"], v["control"]
    if not rows:
        return Judgement("no ViT without skips in this run", not_measured="the chapter ran without no-skip models")
    middle = min(rows, key=lambda row: abs(row["depth_fraction"] - 0.5))
    matched = (control["name"] is not None and control["steps"] is not None     # untrained models: no steps
               and all(row["steps"] == control["steps"] for row in rows))
    steps = ", ".join(f"block {row['block']}: {row['steps']}" for row in rows)
    text = "; ".join(f"block {row['block']}: CKA across it {fmt(row['split_cka_intact'])} intact → "
                     f"{fmt(row['split_cka_no_skip'])} without skips, accuracy drop "
                     f"{fmt(row['accuracy_drop'], 1, 100, ' points')}" for row in rows)
    lower = [all(a < b for a, b in zip(draws(row["split_cka_no_skip"]), draws(row["split_cka_intact"])))
             for row in rows]
    return Judgement(
        text + f" (intact control {control['name']}, {control['steps']} steps; no-skip models {steps})",
        controls=(Check("intact control trained with the no-skip models' number of optimisation steps", matched,
                        f"control {control['steps']} steps; {steps}"),),
        central=Check("CKA across the block lower without its skips, for every block tried, in every draw",
                      all(lower), f"{sum(lower)} of {len(rows)} blocks"),
        secondary=(check(f"≥ {100 * F8_ACCURACY_DROP:g} points accuracy lost at the middle block (block {middle['block']})",
                         middle["accuracy_drop"], lambda x: x >= F8_ACCURACY_DROP, 1, 100, " points"),))


_SEED_LABELS = {"vit_cls": "ViT-CLS", "vit_gap": "ViT-GAP"}   # the spatial chapter's models with a second seed


def _with_seeds(v, model: str, main, field: str, cast=float) -> list[list]:
    """Per-draw values for each training seed of ``model``: ``main`` (the seed-0 model's), then its second
    seed's ``field`` where the spatial chapter recorded one (its ``seed_baseline``, ``None`` without seeds)."""
    out = [[cast(x) for x in draws(main, f"{model} {field}")]]
    seed = v["seed_baseline"]
    if seed is not None and model in seed:
        out.append([cast(x) for x in draws(seed[model][field], f"{model} seed 1 {field}")])
    return out


def _pairings(a: list[list], b: list[list], op) -> list:
    """``op(x, y)`` per draw for every pairing of a training seed of ``a`` with one of ``b``, concatenated."""
    if len({len(x) for x in a + b}) > 1:
        raise ValueError(f"paired quantities have {sorted({len(x) for x in a + b})} draws")
    return [op(x, y) for sa in a for sb in b for x, y in zip(sa, sb)]


def _pairing_note(a: list[list], b: list[list]) -> str:
    n = len(a) * len(b)
    return f", in all {n} pairings of their training seeds" if n > 1 else ""


def _pairing_units(a: list[list], b: list[list]) -> str:
    return "draws × seed pairings" if len(a) * len(b) > 1 else "draws"


def _seed_note(v, fields: dict[str, dict[str, str]], digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """For the spatial findings' measured text: each second training seed's values, and which ViT has none
    (``fields`` maps ``vit_cls`` / ``vit_gap`` to ``{recorded field: the words shown before its value}``)."""
    seed = v["seed_baseline"] or {}
    if not seed:
        return "; one training seed per model (seed-to-seed spread not measured)"
    parts = [f"{label} seed 1 " + ", ".join(f"{words}{fmt(seed[m][f], digits, scale, unit)}"
                                            for f, words in fields[m].items())
             for m, label in _SEED_LABELS.items() if m in seed]
    parts += [f"no second seed of {label}" for m, label in _SEED_LABELS.items() if m not in seed]
    return "; " + "; ".join(parts)


def f9_margin(cls_count: int, other_count: int, tokens: int) -> int:
    """F9's margin in integers: ``5·(CLS − other) − tokens``, at least 0 exactly when the CLS model's count of
    interior tokens most similar to their own patch is 20 points of ``tokens`` above the other model's."""
    return 5 * (int(cls_count) - int(other_count)) - int(tokens)


def _f9(v):
    field = "interior_own_patch_count"
    cls, gap = (_with_seeds(v, m, v[m][field], field, int) for m in ("vit_cls", "vit_gap"))
    res = [[int(c) for c in v["resnet"][field]]]
    n = int(v["vit_cls"]["interior_tokens"])

    def share(counts):
        lo, hi = min(counts), max(counts)
        return f"{lo / n:.0%}" if lo == hi else f"{lo / n:.0%}–{hi / n:.0%}"
    return Judgement(
        f"interior tokens most similar to their own patch ({n} tokens): ViT-CLS {share(cls[0])}, ViT-GAP "
        f"{share(gap[0])}, ResNet {share(res[0])}"
        + _seed_note(v, {"vit_cls": {field: ""}, "vit_gap": {field: ""}}, 1, unit=" tokens"),
        central=count_check(f"ViT-CLS ≥ 20 points above ViT-GAP (5·(CLS − GAP) ≥ tokens{_pairing_note(cls, gap)})",
                            _pairings(cls, gap, lambda a, b: f9_margin(a, b, n)), lambda c: c >= 0,
                            _pairing_units(cls, gap)),
        secondary=(count_check(f"and above the ResNet by ≥ 20 points{_pairing_note(cls, res)}",
                               _pairings(cls, res, lambda a, b: f9_margin(a, b, n)), lambda c: c >= 0,
                               _pairing_units(cls, res)),))


def _f10(v):
    cls = _with_seeds(v, "vit_cls", v["vit_cls_tokens"], "tokens")
    gap = _with_seeds(v, "vit_gap", v["vit_gap_tokens"], "tokens")
    res = [draws(v["resnet_tokens"])]
    cls_cls = _with_seeds(v, "vit_cls", v["vit_cls_cls"], "cls")
    gap_gap = _with_seeds(v, "vit_gap", v["vit_gap_gap"], "gap")

    def minus(a, b):
        return a - b
    return Judgement(
        f"last block, single-token probes: ViT-CLS {pct(cls[0])}, ViT-GAP {pct(gap[0])}, ResNet {pct(res[0])}; "
        f"CLS;CLS {pct(cls_cls[0])} vs GAP;GAP {pct(gap_gap[0])}"
        + _seed_note(v, {"vit_cls": {"tokens": "single tokens ", "cls": "CLS;CLS "},
                         "vit_gap": {"tokens": "single tokens ", "gap": "GAP;GAP "}}, 1, 100, "%"),
        central=check(f"ViT-CLS spatial tokens ≥ 10 points below ViT-GAP's{_pairing_note(cls, gap)}",
                      _pairings(gap, cls, minus), lambda x: x >= 0.1, 1, 100, " points"),
        secondary=(check(f"and ≥ 10 points below the ResNet's{_pairing_note(res, cls)}", _pairings(res, cls, minus),
                         lambda x: x >= 0.1, 1, 100, " points"),
                   check(f"CLS;CLS within 3 points of GAP;GAP{_pairing_note(cls_cls, gap_gap)}",
                         _pairings(cls_cls, gap_gap, minus), lambda x: abs(x) <= 0.03, 1, 100, " points")))


def _matched_reference(v) -> Check:
    ref = v["reference"]
    small = set(ref["small_steps"].values())
    known = None not in small and ref["matched_steps"] is not None   # untrained (arch:) models have no steps
    matched = ref["matched"] is not None and known
    close = matched and all(abs(int(s) - ref["matched_steps"]) <= 0.1 * ref["matched_steps"] for s in small)
    small = sorted(str(s) for s in small)
    return Check("a 100% reference trained with the small-data models' optimisation steps (within 10%)", close,
                 f"reference {ref['matched'] or ref['long']} {ref['matched_steps'] or ref['long_steps']} steps; "
                 f"small-data models {', '.join(small)}")


def _f11(v):
    small = v["smallest_fraction"]["ViT"]
    cka = v["vit_matched"] if v["vit_matched"] is not None else v["vit_long"]
    first, last = cka["cka_first_block"][small], cka["cka_last_block"][small]
    long_first, long_last = v["vit_long"]["cka_first_block"][small], v["vit_long"]["cka_last_block"][small]
    seed = v["seed_baseline"]
    seed_text = ("; seed-to-seed baseline not measured (one training seed per model)" if seed is None else
                 f"; two seeds of the 100% ViT: first block {fmt(seed['cka_first_block'])}, last "
                 f"{fmt(seed['cka_last_block'])}")
    return Judgement(
        f"ViT trained on {small} vs the matched-compute 100% model: CKA {fmt(first)} at the first block, "
        f"{fmt(last)} at the last (vs the long-schedule 100% model: {fmt(long_first)}, {fmt(long_last)}){seed_text}"
        if v["vit_matched"] is not None else
        f"ViT trained on {small} vs the long-schedule 100% model: CKA {fmt(first)} at the first block, "
        f"{fmt(last)} at the last{seed_text}",
        controls=(_matched_reference(v),),
        central=check(f"first-block CKA with the 100% model ≥ {F11_FIRST_BLOCK:g}", first, lambda x: x >= F11_FIRST_BLOCK),
        secondary=(check("≥ 0.1 above the last block's", diff(first, last), lambda x: x >= 0.1),)
        + ((check(f"{small} model's last-block CKA with the long-schedule 100% ViT below its second seed's (a data "
                  "effect beyond seed-to-seed variation)", diff(seed["cka_last_block"], long_last), lambda x: x > 0),)
           if seed is not None else ()))


def _f12(v):
    small = v["smallest_fraction"]["ViT"]
    matched = v["probe_mid_gain_points_matched"]
    gain = (matched or v["probe_mid_gain_points_long"])["vit"]
    same = v["probe_mid_vit_minus_resnet_points"]
    seed = v["seed_baseline"]
    seed_text = ("; seed-to-seed baseline not measured" if seed is None else
                 f"; two seeds of the 100% ViT differ by {fmt(seed['probe_mid_seed0_minus_seed1_points'], 1, unit=' points')}")
    seed_checks = () if seed is None else (check(
        "gain larger than the two 100% seeds' difference", [g - abs(x) for g, x in
                                                           zip(draws(gain), draws(seed["probe_mid_seed0_minus_seed1_points"]))],
        lambda x: x > 0, 1, unit=" points"),)
    return Judgement(
        f"mid-network probe, 100% minus {small} model: {fmt(gain, 1, unit=' points')} "
        f"({'matched-compute' if matched else 'long-schedule'} 100% model; long schedule "
        f"{fmt(v['probe_mid_gain_points_long']['vit'], 1, unit=' points')}); ViT minus ResNet at 100%, same readout "
        f"(mean of spatial tokens vs global average pool) {fmt(same, 1, unit=' points')}, ViT CLS readout "
        f"{fmt(v['probe_mid_vit_minus_resnet_points_cls'], 1, unit=' points')}{seed_text}",
        controls=(_matched_reference(v),),
        central=check("mid-network probe ≥ 5 points better at 100% than at the smallest fraction", gain,
                      lambda x: x >= 5, 1, unit=" points"),
        secondary=seed_checks + (check("ViT above the ResNet at 100% through the same readout", same, lambda x: x > 0,
                                       1, unit=" points"),))


FINDINGS = [
    Finding(1, "Fig 1", "representation_structure",
            "ViT layers are uniformly similar; the ResNet has stages, low and high layers dissimilar", _f1,
            "a 6-block ViT and a 6-unit ResNet have few layers between bottom and top"),
    Finding(2, "Fig 2", "representation_structure",
            "the ResNet's lower half matches the ViT's lowest quarter; the ViT's last third matches no ResNet layer",
            _f2, "both small networks solve a 10-class task on 28-px images, so their top layers may converge on "
                 "the same class-separating representation"),
    Finding(3, "Fig 3", "local_global", "low blocks mix local and global heads; the highest blocks are all global",
            _f3, "local heads may need more data or a different recipe (see the recipe ablation)"),
    Finding(4, "Fig 4", "local_global", "with less training data, early blocks learn no local heads", _f4,
            "needs a 100% model with local heads"),
    Finding(5, "Fig 5", "local_global",
            "the more local an early head, the more similar it is to the ResNet's lower layers", _f5,
            "needs heads that span local to global distances"),
    Finding(6, "Fig 6", "local_global",
            "ViT receptive fields are larger early and global by mid-network; the ResNet's grow gradually", _f6,
            "on a 28-px image the ResNet's receptive field may cover most of the image after two stages"),
    Finding(7, "Fig 7", "skip_connections",
            "early on the CLS token travels the skip path while patch tokens change; reversed later; ViT ratios far "
            "above the ResNet's", _f7,
            "with 6 blocks and a 10-class task the CLS token may have little to gather"),
    Finding(8, "Fig 8", "skip_connections",
            "removing a block's skips splits the CKA heatmap there; middle blocks cost about 4% accuracy", _f8),
    Finding(9, "Figs 9–10", "spatial",
            "ViT-CLS final tokens localise to their own patch; ResNet and GAP-ViT much less", _f9,
            "28-px images in 4-px patches may leave each token little context to lose"),
    Finding(10, "Fig 11", "spatial",
            "single spatial tokens of the CLS model probe poorly; GAP-model and ResNet tokens well; CLS;CLS ≈ GAP;GAP",
            _f10, "10 classes may be far easier to read from one token than the paper's 1,000"),
    Finding(11, "Fig 12", "data_scale", "low layers are already similar with 3–10% of the data; high layers need much "
            "more", _f11, "our fractions are of 60,000 images (1,800 at 3%), not of 300 million"),
    Finding(12, "Fig 13", "data_scale",
            "more data gives much stronger intermediate layers; ViTs stronger than ResNets mid-network", _f12,
            "the paper compares 300M vs 1.3M images; our largest/smallest ratio is 33×"),
]


def judge(finding: Finding, results: dict) -> Judgement:
    """``finding``'s :class:`Judgement` on ``results`` (``{chapter: values}``); a chapter that did not run is
    not measured, a missing field raises :class:`MissingResult`."""
    if finding.chapter not in results:
        return Judgement(f"(the {finding.chapter} chapter did not run in this build)",
                         not_measured=f"no results from {finding.chapter}")
    try:
        return finding.judge(_Record(finding.chapter, results[finding.chapter]))
    except UndefinedValue as err:
        return Judgement(f"(undefined for the models of this build: {err})",
                         not_measured="a recorded value is undefined for these models (NaN or infinite)")


def table(results: dict, chapter: str | None = None) -> list[dict]:
    """One row per finding (of ``chapter`` only, if given): ``finding, figure, chapter, paper, measured, verdict, checks`` (a list of
    ``(kind, rule, met, value)`` with kind in precondition / control / central / secondary) and ``hypothesis``
    (empty when reproduced)."""
    rows = []
    for f in FINDINGS:
        if chapter is not None and f.chapter != chapter:   # one chapter's findings only (its "what it means")
            continue
        j = judge(f, results)
        checks = ([("precondition", c) for c in j.preconditions] + [("control", c) for c in j.controls]
                  + ([("central", j.central)] if j.central else []) + [("secondary", c) for c in j.secondary])
        rows.append({"finding": f.number, "figure": f.figure, "chapter": f.chapter, "paper": f.paper,
                     "measured": j.measured, "verdict": j.verdict,
                     "checks": [(kind, c.rule, c.met, c.value) for kind, c in checks],
                     "not_measured": j.not_measured,
                     "hypothesis": f.hypothesis if j.verdict not in (REPRODUCED, NOT_MEASURED) else ""})
    return rows


def tally(rows: list[dict]) -> dict[str, int]:
    """How many findings got each verdict, in the order of :data:`VERDICTS`."""
    return {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}


def _why(row: dict) -> str:
    failed = {kind: [rule for k, rule, met, _ in row["checks"] if k == kind and not met] for kind in
              ("precondition", "control", "central", "secondary")}
    v = row["verdict"]
    if v == NOT_MEASURED:
        return row["not_measured"]
    if v == UNTESTABLE:
        return "its precondition is absent: " + "; ".join(failed["precondition"])
    if v == CONFOUNDED:
        return "a control it needs is not matched: " + "; ".join(failed["control"])
    if v == NOT_REPRODUCED:
        where = "one draw or pairing of training seeds" if "pairings" in failed["central"][0] else "one draw"
        return f"the central criterion fails in at least {where}: " + failed["central"][0]
    if v == PARTLY:
        return "the central criterion holds in every draw; not met: " + "; ".join(failed["secondary"])
    return "every criterion holds in every draw"


def meaning(chapter: str, results: dict) -> str:
    """A short Markdown "what it means" paragraph for ``chapter``: each of its findings, its verdict, why,
    and the untested hypothesis offered for a difference."""
    lines = []
    for row in table(results, chapter):
        line = (f"- **Finding {row['finding']}** ({row['figure']}): *{row['paper']}* — **{row['verdict']}**; "
                f"{_why(row)}. Measured: {row['measured']}.")
        if row["hypothesis"]:
            line += f" A possible reason, *not tested here*: {row['hypothesis']}."
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# The conclusion's text

_MARK = {True: "✓", False: "✗"}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    """The conclusion's table: per finding, the paper's claim, the measured values with their spreads, each
    check (precondition, control, central, secondary) met or not with its value, and the verdict."""
    lines = ["| # | The paper (figure) | Measured here (mean ± SD over draws, range) | Criteria | Verdict |",
             "|---|---|---|---|---|"]
    for r in rows:
        checks = "<br>".join(f"{_MARK[met]} *{kind}*: {_cell(rule)}" + (f" [{_cell(value)}]" if value else "")
                             for kind, rule, met, value in r["checks"]) or "–"
        lines.append(f"| {r['finding']} | {_cell(r['paper'])} ({r['figure']}) | {_cell(r['measured'])} | {checks} "
                     f"| **{r['verdict']}** |")
    return "\n".join(lines)


CHAPTER_TITLES = {"representation_structure": "Representation structure", "local_global": "Local and global information",
                  "skip_connections": "Skip connections", "spatial": "Spatial information", "data_scale": "Scale of data"}
OUTCOMES_FILE = "outcomes.md"   # written beside the results by the conclusion; the intro includes it


def outcome_table(rows: list[dict]) -> str:
    """The intro's short table: per finding, the paper's claim, its chapter and the verdict, with the tally."""
    lines = [f"**Outcome in this build.** {tally_text(rows)} The conclusion chapter shows every measured value with "
             "its spread and each criterion.", "", "| # | The paper (figure) | Chapter | Verdict |", "|---|---|---|---|"]
    lines += [f"| {r['finding']} | {_cell(r['paper'])} ({r['figure']}) | {CHAPTER_TITLES.get(r['chapter'], r['chapter'])} "
              f"| **{r['verdict']}** |" for r in rows]
    return "\n".join(lines) + "\n"


def write_outcomes(rows: list[dict], folder: str | os.PathLike = RESULTS_DIR) -> Path:
    """Write :func:`outcome_table` to ``folder/outcomes.md`` (atomically) and return its path."""
    path = Path(folder) / OUTCOMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome_table(rows))
    tmp.replace(path)
    return path


def tally_text(rows: list[dict]) -> str:
    """``"Of 12 findings: 2 reproduced, 3 partly, ..."`` (verdicts with no finding left out)."""
    counts = tally(rows)
    return f"Of {len(rows)} findings: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "."


def explanations(rows: list[dict]) -> str:
    """One line per finding not reproduced: why (the failed check), and the untested hypothesis offered."""
    lines = []
    for r in rows:
        if r["verdict"] == REPRODUCED:
            continue
        line = f"- **Finding {r['finding']}** ({r['verdict']}): {_why(r)}."
        if r["hypothesis"]:
            line += f" A possible reason, *an untested hypothesis*: {r['hypothesis']}."
        lines.append(line)
    return "\n".join(lines)

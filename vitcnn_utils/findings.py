"""The measured numbers behind the book's conclusion, and the rules that judge the paper's findings.

Each chapter records the numbers its text reports with :func:`record` (one JSON file per chapter in the
results folder, written atomically); the conclusion reads them all with :func:`load_results` and judges each of the
paper's twelve findings with the rules in :data:`FINDINGS`, so the verdict table always follows from what this
build computed.

**Seeds and draws.** Every number a verdict uses is recorded as a list over independent draws of analysis images
(and probe shots): ``[value of draw 0, value of draw 1, ...]``, for each *training seed*: a chapter records its
own run (seed 0) and, in ``"replicates"``, the same chapter run with every model replaced by its seed twin
(:mod:`vitcnn_utils.seeds`). Training seeds are the noise that matters at this scale (two ViTs differing only in
their seed differ more than five image draws do).

**Intervals.** Each criterion is judged on an :class:`Interval` over seeds and draws (per seed, a 95% Student-t
interval of the mean over draws; the union over seeds). It **holds** when the interval lies on the claimed side
of its threshold, **fails** when it lies on the other side, and is **undecided** when it straddles. More draws
narrow an interval; unlike a "holds in every draw" gate they never make a decided criterion harsher.

**Rules.** A finding declares

* *preconditions*: what must exist for the claim to be testable at all (e.g. a local attention head for a
  claim about local heads); one not holding makes the finding **untestable at this scale**;
* *controls*: comparisons the claim needs matched (equal optimisation steps); one unmatched makes it
  **confounded**;
* a *central criterion*: the paper's direction (an effect beyond zero) or, for a claim about a level, that
  level. Holds → judged further; undecided → **not distinguishable from noise**; fails → **opposite** (a
  direction) or **not reproduced** (a level);
* *size* criteria, the paper's size of the effect (its number where it gives one): not all holding →
  **direction only**; and *secondary* criteria, further parts of the finding: all holding → **reproduced**,
  else **partly**.

Each threshold states its origin: the paper's number (with the figure), or this project's reading of a claim
the paper makes in words. Thresholds were set by this project when the chapters were written; the book's
history shows they were set after first results were seen.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cka import student_t_quantile

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


def record(chapter: str, values: dict, folder: str | os.PathLike = RESULTS_DIR,
           replicates: Sequence[dict] = ()) -> Path:
    """Write ``values`` (numbers, strings, lists, tensors) as ``folder/<chapter>.json``; returns the path.
    ``replicates``: the records of the same chapter run with each further training seed's models (stored under
    ``"replicates"``; the rules judge every number over all of them)."""
    if replicates:
        values = {**values, "replicates": list(replicates)}
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
# Intervals over training seeds and image draws

def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom
    (:func:`vitcnn_utils.cka.student_t_quantile`, which gives the two-sided one)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    t = student_t_quantile(abs(2.0 * p - 1.0), df)
    return t if p > 0.5 else -t


LEVEL = 0.95   # the confidence level of every interval a verdict reads


@dataclass(frozen=True)
class Interval:
    """Where a quantity lies, from training seeds and image draws together.

    For each training seed ``s`` (a replicate of the whole experiment, every model retrained with that seed) the
    draws give a mean ``m_s`` and a :data:`LEVEL` Student-t interval of that mean, ``m_s ± t·sd_s/√n_s``. The
    interval is the union of the seeds' intervals, ``[min_s (m_s − h_s), max_s (m_s + h_s)]``: it spans the
    seed-to-seed spread (the noise that dominates here) and each seed's image-draw uncertainty. More draws
    narrow the draw part; they never widen it in expectation. With one training seed it covers the image draws
    only (:attr:`n_seeds` says so). One draw per seed has no draw uncertainty (``h_s = 0``)."""
    low: float
    high: float
    mean: float                                    # the mean of the seeds' means
    seeds: tuple[tuple[float, float, float], ...]  # (mean, low, high) per training seed
    n_draws: int                                   # draws per seed (the smallest, if they differ)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def text(self, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
        """``"0.12 [0.08, 0.15]"``: the mean and the interval (see the class docstring for what it spans)."""
        def num(x: float) -> str:
            out = f"{scale * x:.{digits}f}"
            return f"{0.0:.{digits}f}" if float(out) == 0 else out
        return f"{num(self.mean)}{unit} [{num(self.low)}, {num(self.high)}]"


def interval(per_seed, what: str = "value") -> Interval:
    """The :class:`Interval` of ``per_seed``: one list of per-draw values for each training seed."""
    per_seed = [draws(values, f"{what} (seed {k})") for k, values in enumerate(per_seed)]
    if not per_seed:
        raise ValueError(f"{what}: no training seeds")
    seeds = []
    for values in per_seed:
        n, m = len(values), statistics.fmean(values)
        h = t_quantile(0.5 + LEVEL / 2, n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else 0.0
        seeds.append((m, m - h, m + h))
    return Interval(min(s[1] for s in seeds), max(s[2] for s in seeds), statistics.fmean(s[0] for s in seeds),
                    tuple(seeds), min(len(v) for v in per_seed))


def over_seeds(results: Sequence, quantity: Callable, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """The :class:`Interval` text (``"0.67 [0.62, 0.71]"``) of ``quantity(result)``, a list over draws, over the
    results of every training seed (the chapter's own run and its seed twins'): a chapter's numbers as the
    verdicts read them. ``"undefined"`` when a draw's value is NaN or infinite."""
    try:
        return interval([quantity(r) for r in results]).text(digits, scale, unit)
    except UndefinedValue:
        return "undefined"


def runs_text(n_seeds: int, n_draws: int) -> str:
    """``"2 training seeds × 5 draws"`` (what an interval spans), or ``"1 training seed × 5 draws"``."""
    return f"{n_seeds} training seed{'s' * (n_seeds != 1)} × {n_draws} draw{'s' * (n_draws != 1)}"


# --------------------------------------------------------------------------------------------------------
# Checks and verdicts

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
PAPER, PROJECT = "the paper", "this project's reading"     # where a threshold comes from


@dataclass(frozen=True)
class Check:
    """One precondition, control or criterion: what must hold (``rule``), its ``state`` (:data:`HOLDS` when the
    interval lies on the claimed side of the threshold, :data:`FAILS` when it lies on the other side,
    :data:`UNDECIDED` when it straddles), the measured value (``value``) and where the threshold comes from
    (``origin``: :data:`PAPER` with the figure, or :data:`PROJECT`)."""
    rule: str
    state: str
    value: str = ""
    origin: str = ""
    interval: Interval | None = None      # what was judged (None for a fact such as matched steps)
    side: str = ""
    threshold: object = None
    scale: float = 1.0                    # display: value × scale, in ``unit``
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.state == HOLDS


def decide(iv: Interval, side: str, threshold) -> str:
    """:data:`HOLDS` / :data:`FAILS` / :data:`UNDECIDED` for "the quantity is ``side`` ``threshold``", with
    ``side`` one of ``">"``, ``"≥"``, ``"<"``, ``"≤"``, or ``"within"`` (``threshold = (low, high)``)."""
    lo, hi = iv.low, iv.high
    if side == ">":
        return HOLDS if lo > threshold else FAILS if hi <= threshold else UNDECIDED
    if side == "≥":
        return HOLDS if lo >= threshold else FAILS if hi < threshold else UNDECIDED
    if side == "<":
        return HOLDS if hi < threshold else FAILS if lo >= threshold else UNDECIDED
    if side == "≤":
        return HOLDS if hi <= threshold else FAILS if lo > threshold else UNDECIDED
    if side == "within":
        a, b = threshold
        return HOLDS if a <= lo and hi <= b else FAILS if hi < a or lo > b else UNDECIDED
    raise ValueError(f"unknown side {side!r}")


def check(rule: str, per_seed, side: str, threshold, origin: str = PROJECT, digits: int = 2, scale: float = 1.0,
          unit: str = "") -> Check:
    """A criterion on a quantity measured per training seed and draw (``per_seed``: one list of per-draw values
    per seed), judged on its :class:`Interval`."""
    iv = interval(per_seed)
    return Check(rule, decide(iv, side, threshold), iv.text(digits, scale, unit), origin, iv, side, threshold, scale,
                 unit)


def flag(rule: str, met: bool, value: str = "", origin: str = PROJECT) -> Check:
    """A check that is a fact rather than a measurement (e.g. two models trained for the same number of steps)."""
    return Check(rule, HOLDS if met else FAILS, value, origin)


REPRODUCED, DIRECTION_ONLY, PARTLY = "reproduced", "direction only", "partly"
NOT_DISTINGUISHABLE, OPPOSITE, NOT_REPRODUCED = "not distinguishable from noise", "opposite", "not reproduced"
UNTESTABLE, CONFOUNDED, NOT_MEASURED = "untestable at this scale", "confounded", "not measured"
VERDICTS = (REPRODUCED, DIRECTION_ONLY, PARTLY, NOT_DISTINGUISHABLE, OPPOSITE, NOT_REPRODUCED, UNTESTABLE, CONFOUNDED,
            NOT_MEASURED)
VERDICT_MEANINGS = {
    REPRODUCED: "the paper's direction beyond the noise, and its size (every criterion holds)",
    DIRECTION_ONLY: "the paper's direction beyond the noise, but not (or not clearly) its size",
    PARTLY: "the central claim holds beyond the noise; a further part of the finding does not",
    NOT_DISTINGUISHABLE: "the interval of the central effect straddles its threshold: not told apart from noise",
    OPPOSITE: "the central effect lies beyond the noise on the side opposite to the paper's",
    NOT_REPRODUCED: "the central quantity lies beyond the noise on the wrong side of a level the paper's claim needs",
    UNTESTABLE: "a precondition of the claim is absent in these small models",
    CONFOUNDED: "a comparison the claim needs is not matched (e.g. training steps)",
    NOT_MEASURED: "the chapter did not run, or a value is undefined for these models",
}


@dataclass(frozen=True)
class Judgement:
    """What a rule found: the measured text, and its checks. ``central`` is the claim's direction (or level);
    ``size`` the paper's size of it; ``secondary`` further parts of the finding. ``direction`` says whether
    ``central`` compares with zero (then its failure is :data:`OPPOSITE`, else :data:`NOT_REPRODUCED`).
    ``not_measured`` (a reason) overrides all."""
    measured: str
    central: Check | None = None
    size: tuple[Check, ...] = ()
    secondary: tuple[Check, ...] = ()
    preconditions: tuple[Check, ...] = ()
    controls: tuple[Check, ...] = ()
    direction: bool = True
    not_measured: str = ""

    @property
    def verdict(self) -> str:
        if self.not_measured:
            return NOT_MEASURED
        if not all(c.met for c in self.preconditions):
            return UNTESTABLE
        if not all(c.met for c in self.controls):
            return CONFOUNDED
        if self.central.state == UNDECIDED:
            return NOT_DISTINGUISHABLE
        if self.central.state == FAILS:
            return OPPOSITE if self.direction else NOT_REPRODUCED
        if not all(c.met for c in self.size):
            return DIRECTION_ONLY
        return REPRODUCED if all(c.met for c in self.secondary) else PARTLY

    def checks(self) -> list[tuple[str, Check]]:
        return ([("precondition", c) for c in self.preconditions] + [("control", c) for c in self.controls]
                + ([("central", self.central)] if self.central else []) + [("size", c) for c in self.size]
                + [("secondary", c) for c in self.secondary])


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


def replicates(values: dict) -> list[dict]:
    """The records of every training seed of a chapter: its own (seed 0) and those in ``values["replicates"]``
    (the same chapter run with every model's seed twin, see :mod:`vitcnn_utils.seeds`)."""
    chapter = getattr(values, "chapter", "?")
    return [values] + [_Record(chapter, r) for r in (values.get("replicates") or [])]


def per_seed(reps: list[dict], quantity: Callable[[dict], list]) -> list[list[float]]:
    """``quantity(record)`` (a list over draws) for each training seed's record."""
    return [list(quantity(v)) for v in reps]


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
# The rules, one per finding. Each reads one record per training seed (``replicates``) and judges intervals.

def _seeds_text(reps) -> str:
    n = len(reps)
    return (f"{n} training seeds × {len(draws(reps[0]['seeds'], 'seeds'))} draws" if n > 1 else
            f"one training seed × {len(draws(reps[0]['seeds'], 'seeds'))} draws: image-draw noise only")


def _f1(v):
    reps = replicates(v)
    d_all = per_seed(reps, lambda r: diff(r["vit_low_high"], r["resnet_low_high"]))
    d_blocks = per_seed(reps, lambda r: diff(r["vit_low_high_blocks"], r["resnet_low_high_blocks"]))
    vit, res = (interval(per_seed(reps, lambda r, k=k: r[k])) for k in ("vit_low_high", "resnet_low_high"))
    return Judgement(
        f"mean CKA between the lowest and highest quarter of the layers: ViT {vit.text()}, ResNet {res.text()} "
        f"({_seeds_text(reps)})",
        central=check("ViT's low-vs-high CKA above the ResNet's (all layers)", d_all, ">", 0.0),
        size=(check("by at least 0.1", d_all, "≥", 0.1, PROJECT + " of Fig 1 (the paper gives no number)"),),
        secondary=(check("ViT above the ResNet on block outputs only", d_blocks, ">", 0.0),))


def _f2(v):
    reps = replicates(v)
    total = int(v["vit_lowest_quarter_layers"])
    chance = int(v["resnet_lower_half_layers"]) / int(v["resnet_layers"])
    share = per_seed(reps, lambda r: [c / total for c in r["vit_lowest_quarter_best_in_resnet_lower_half_count"]])
    return Judgement(
        f"share of the ViT's {total} lowest-quarter layers whose best-matching ResNet layer is in the ResNet's lower "
        f"half: {interval(share).text(0, 100, '%')} (a random match: {chance:.0%}); best CKA of the ViT's last "
        f"third with any ResNet layer {interval(per_seed(reps, lambda r: r['max_cka_vit_last_third'])).text()} "
        f"({_seeds_text(reps)})",
        central=check(f"ViT lowest-quarter layers best matched in the ResNet's lower half: share above a random "
                      f"match's {chance:.0%}", share, ">", chance, digits=0,
                      scale=100, unit="%"),
        size=(check("at least 75% of them", share, "≥", 0.75, PROJECT + " of Fig 2", 0, 100, "%"),),
        secondary=(check("the ViT's last third matches no ResNet layer: max CKA < 0.5",
                         per_seed(reps, lambda r: r["max_cka_vit_last_third"]), "<", 0.5, PROJECT + " of Fig 2"),))


def _min_ratio(r, key: str, block: int = 0) -> list[float]:
    """Per draw: the smallest head distance of ``block`` as a fraction of the uniform-attention distance."""
    return [min(draw[block]) / r["uniform_distance"] for draw in r[key]]


def _max_ratio(r, key: str, block: int = 0) -> list[float]:
    return [max(draw[block]) / r["uniform_distance"] for draw in r[key]]


def _local_precondition(reps, key="distances_all_data") -> Check:
    return check(f"the 100% ViT has a local head in block 0 (its most local head below {LOCAL_HEAD}× the "
                 "uniform-attention distance)", per_seed(reps, lambda r: _min_ratio(r, key)), "<", LOCAL_HEAD,
                 PROJECT + " (the paper calls heads local by eye in Fig 3)")


def _distance_text(reps) -> str:
    lo = interval(per_seed(reps, lambda r: _min_ratio(r, "distances_all_data")))
    hi = interval(per_seed(reps, lambda r: _max_ratio(r, "distances_all_data")))
    return (f"block-0 head distances as a fraction of uniform attention's ({reps[0]['uniform_distance']:.1f} px): "
            f"most local head {lo.text()}, most global {hi.text()} ({_seeds_text(reps)})")


def _f3(v):
    reps = replicates(v)
    return Judgement(
        _distance_text(reps) + ". No local head in block 0 is what the paper's Fig 4 finds for ViTs trained on "
        "little data (ImageNet instead of JFT): 60,000 images are far less still",
        central=check(f"block 0 has a local head (most local head < {LOCAL_HEAD}× uniform)",
                      per_seed(reps, lambda r: _min_ratio(r, "distances_all_data")), "<", LOCAL_HEAD,
                      PROJECT + " (the paper calls heads local by eye)"),
        direction=False,
        secondary=(check(f"and a global head (most global head > {GLOBAL_HEAD}× uniform)",
                         per_seed(reps, lambda r: _max_ratio(r, "distances_all_data")), ">", GLOBAL_HEAD),
                   check("the last block has no local head",
                         per_seed(reps, lambda r: _min_ratio(r, "distances_all_data", -1)), "≥", LOCAL_HEAD)))


def _f4(v):
    reps = replicates(v)
    less = per_seed(reps, lambda r: _min_ratio(r, "distances_less_data"))
    more_local = per_seed(reps, lambda r: diff(_min_ratio(r, "distances_less_data"), _min_ratio(r, "distances_all_data")))
    return Judgement(
        f"most local block-0 head, fraction of uniform: {interval(less).text()} with 3% of the data; "
        + _distance_text(reps),
        preconditions=(_local_precondition(reps),),
        central=check("the 3% model's most local block-0 head less local than the 100% model's", more_local, ">", 0.0),
        secondary=(check(f"no local head in the 3% model (≥ {LOCAL_HEAD}× uniform)", less, "≥", LOCAL_HEAD),))


def _f5(v):
    reps = replicates(v)
    rho = per_seed(reps, lambda r: r["head_subset_rank_correlation"])
    return Judgement(
        f"rank correlation of a block-0 head's distance with its CKA to low ResNet layers {interval(rho).text()}; "
        + _distance_text(reps),
        preconditions=(_local_precondition(reps),),
        central=check("rank correlation of block-0 head distance with CKA to low ResNet layers negative", rho, "<",
                      0.0),
        size=(check("≤ −0.5", rho, "≤", -0.5, PROJECT + " of Fig 5"),))


def _f6(v):
    reps = replicates(v)

    def radii(r, model):
        return [r["erf_radius"][f"{model} {layer}"] for layer in r[f"{model.lower()}_erf_layers"]]
    low = per_seed(reps, lambda r: diff(radii(r, "ViT")[0], radii(r, "ResNet")[0]))
    mid = per_seed(reps, lambda r: diff(radii(r, "ViT")[1], radii(r, "ResNet")[1]))
    steps = [per_seed(reps, lambda r, k=k: diff(radii(r, "ResNet")[k + 1], radii(r, "ResNet")[k]))
             for k in range(len(radii(v, "ResNet")) - 1)]
    uniform = v["uniform_erf_radius"]
    vit_mid = per_seed(reps, lambda r: [x / uniform for x in draws(radii(r, "ViT")[1])])
    growth = [interval(s) for s in steps]
    state = HOLDS if all(g.low >= 0 for g in growth) else FAILS if any(g.high < 0 for g in growth) else UNDECIDED
    text = lambda model: "; ".join(interval(per_seed(reps, lambda r, k=k: radii(r, model)[k])).text(1)   # noqa: E731
                                   for k in range(len(radii(v, model))))
    return Judgement(
        f"half-mass radius (px), low / mid / high: ViT {text('ViT')} — ResNet {text('ResNet')}; a uniform field "
        f"{uniform:.1f} px ({_seeds_text(reps)})",
        central=check("ViT radius above the ResNet's at low depth", low, ">", 0.0, digits=1, unit=" px"),
        secondary=(check("and at mid depth", mid, ">", 0.0, digits=1, unit=" px"),
                   Check("ResNet radius grows with depth", state, "; ".join(g.text(1, unit=" px") for g in growth)),
                   check(f"ViT global by mid-network: mid-depth radius ≥ {GLOBAL_HEAD}× a uniform field's", vit_mid,
                         "≥", GLOBAL_HEAD, PROJECT + " (the same 0.9 as a global head)")))


def _f7(v):
    reps = replicates(v)
    first = per_seed(reps, lambda r: diff(r["cls_ratio_first_half"], r["spatial_ratio_first_half"]))
    second = per_seed(reps, lambda r: diff(r["cls_ratio_second_half"], r["spatial_ratio_second_half"]))
    over = per_seed(reps, lambda r: [a / b for a, b in zip(draws(r["vit_median_ratio"]), draws(r["resnet_median_ratio"]))])
    t = lambda k: interval(per_seed(reps, lambda r: r[k])).text()   # noqa: E731
    return Judgement(
        f"skip ratio ‖z‖/‖f(z)‖, first half: CLS {t('cls_ratio_first_half')} vs patches "
        f"{t('spatial_ratio_first_half')}; second half: CLS {t('cls_ratio_second_half')} vs patches "
        f"{t('spatial_ratio_second_half')}; median ViT {t('vit_median_ratio')}, ResNet {t('resnet_median_ratio')} "
        f"({_seeds_text(reps)})",
        central=check("CLS ratio above the patch tokens' in the first half", first, ">", 0.0),
        secondary=(check("below them in the second half", second, "<", 0.0),),
        size=(check("ViT median ratio ≥ 2× the ResNet's", over, "≥", 2.0, PROJECT + " of “far above” (Fig 7)"),))


def _f8(v):
    reps = replicates(v)
    rows, control = v["no_skip"], v["control"]
    if not rows:
        return Judgement("no ViT without skips in this run", not_measured="the chapter ran without no-skip models")
    middle = min(range(len(rows)), key=lambda k: abs(rows[k]["depth_fraction"] - 0.5))
    matched = all(r["control"]["name"] is not None and r["control"]["steps"] is not None
                  and all(row["steps"] == r["control"]["steps"] for row in r["no_skip"]) for r in reps)
    steps = ", ".join(f"block {row['block']}: {row['steps']}" for row in rows)

    def split(k):
        return per_seed(reps, lambda r: diff(r["no_skip"][k]["split_cka_intact"], r["no_skip"][k]["split_cka_no_skip"]))

    def drop(k):
        return per_seed(reps, lambda r: r["no_skip"][k]["accuracy_drop"])
    text = "; ".join(f"block {row['block']}: CKA across it lower by {interval(split(k)).text()} without skips, "
                     f"accuracy drop {interval(drop(k)).text(1, 100, ' points')}" for k, row in enumerate(rows))
    others = [k for k in range(len(rows)) if k != middle]
    return Judgement(
        text + f" (intact control {control['name']}, {control['steps']} steps; no-skip models {steps}; "
        f"{_seeds_text(reps)})",
        controls=(flag("intact control trained with the no-skip models' number of optimisation steps", matched,
                       f"control {control['steps']} steps; {steps}"),),
        central=check(f"CKA across the middle block (block {rows[middle]['block']}) lower without its skips",
                      split(middle), ">", 0.0),
        size=(check(f"about 4 points accuracy lost at the middle block (≥ {100 * F8_ACCURACY_DROP:g})", drop(middle),
                    "≥", F8_ACCURACY_DROP, PAPER + " (Fig 8: about 4%)", 1, 100, " points"),),
        secondary=tuple(check(f"CKA across block {rows[k]['block']} lower without its skips", split(k), ">", 0.0)
                        for k in others))


def _share_points(counts, tokens: int) -> list[float]:
    return [100.0 * int(c) / tokens for c in counts]


def _f9(v):
    reps = replicates(v)
    field = "interior_own_patch_count"
    n = int(v["vit_cls"]["interior_tokens"])
    share = {m: per_seed(reps, lambda r, m=m: _share_points(r[m][field], n)) for m in ("vit_cls", "vit_gap", "resnet")}
    cls_gap = per_seed(reps, lambda r: diff(_share_points(r["vit_cls"][field], n), _share_points(r["vit_gap"][field], n)))
    cls_res = per_seed(reps, lambda r: diff(_share_points(r["vit_cls"][field], n), _share_points(r["resnet"][field], n)))
    return Judgement(
        f"share of the {n} interior tokens most similar to their own input patch: ViT-CLS "
        f"{interval(share['vit_cls']).text(0, unit='%')}, ViT-GAP {interval(share['vit_gap']).text(0, unit='%')}, "
        f"ResNet {interval(share['resnet']).text(0, unit='%')} ({_seeds_text(reps)})",
        central=check("ViT-CLS above ViT-GAP", cls_gap, ">", 0.0, digits=0, unit=" points"),
        size=(check("by ≥ 20 points", cls_gap, "≥", 20.0, PROJECT + " of “much less” (Figs 9–10)", 0,
                    unit=" points"),),
        secondary=(check("ViT-CLS above the ResNet", cls_res, ">", 0.0, digits=0, unit=" points"),))


def _f10(v):
    reps = replicates(v)
    gap_cls = per_seed(reps, lambda r: diff(r["vit_gap_tokens"], r["vit_cls_tokens"]))
    res_cls = per_seed(reps, lambda r: diff(r["resnet_tokens"], r["vit_cls_tokens"]))
    same = per_seed(reps, lambda r: diff(r["vit_cls_cls"], r["vit_gap_gap"]))
    t = lambda k: interval(per_seed(reps, lambda r: r[k])).text(1, 100, "%")   # noqa: E731
    return Judgement(
        f"last block, single-token probes: ViT-CLS {t('vit_cls_tokens')}, ViT-GAP {t('vit_gap_tokens')}, ResNet "
        f"{t('resnet_tokens')}; CLS;CLS {t('vit_cls_cls')} vs GAP;GAP {t('vit_gap_gap')} ({_seeds_text(reps)})",
        central=check("ViT-CLS spatial tokens below ViT-GAP's", gap_cls, ">", 0.0, digits=1, scale=100, unit=" points"),
        size=(check("by about the paper's 45 points (≥ 45)", gap_cls, "≥", 0.45,
                    PAPER + " (Fig 11: ViT-GAP ≈ 57%, ViT-CLS ≈ 6–12%)", 1, 100, " points"),),
        secondary=(check("ViT-CLS spatial tokens below the ResNet's", res_cls, ">", 0.0, digits=1, scale=100, unit=" points"),
                   check("CLS;CLS within 3 points of GAP;GAP", same, "within", (-0.03, 0.03),
                         PROJECT + " of “≈” (Fig 11)", 1, 100, " points")))


def _steps_control(v) -> Check:
    ref = v["reference"]
    small = set(ref["small_steps"].values())
    known = None not in small and ref["matched_steps"] is not None   # untrained (arch:) models have no steps
    matched = ref["matched"] is not None and known
    close = matched and all(abs(int(s) - ref["matched_steps"]) <= 0.1 * ref["matched_steps"] for s in small)
    small = sorted(str(s) for s in small)
    return flag("a 100% reference trained with the small-data models' optimisation steps (within 10%)", close,
                f"reference {ref['matched'] or ref['long']} {ref['matched_steps'] or ref['long_steps']} steps; "
                f"small-data models {', '.join(small)}")


def _accuracy_control(reps) -> Check:
    """More data must not lower test accuracy at the matched budget: if the matched 100% model is below a
    small-data model, its steps, not its data, limit it, and a data comparison at that budget is confounded."""
    rows = []
    for r in reps:
        acc = {label: (e or {}).get("test_accuracy") for label, e in r["training"]["ViT"].items()}
        ref = r["reference"]["matched"]
        matched_label = next((lb for lb, name in r["models"]["ViT"].items() if name == ref), None)
        small = {lb: acc.get(lb) for lb in r["reference"]["small_steps"]}
        rows.append((acc.get(matched_label), small))
    known = all(m is not None and None not in s.values() for m, s in rows)
    ok = known and all(all(m >= a for a in s.values()) for m, s in rows)
    value = "; ".join(f"matched 100% {m:.1%} vs " + ", ".join(f"{lb} {a:.1%}" for lb, a in s.items())
                      for m, s in rows) if known else "test accuracies unknown (untrained models)"
    return flag("the matched-compute 100% model at least as accurate as every small-data model (else its steps, "
                "not its data, limit it)", ok, value)


def _f11(v):
    reps = replicates(v)
    small = v["smallest_fraction"]["ViT"]
    if any(r.get("vit_matched_other_seed") is None for r in reps):
        return Judgement("no second training seed of the matched-compute 100% ViT in this run",
                         not_measured="a data effect needs the CKA of two 100% ViTs (seed baseline) beside the "
                                      "small-data model's")

    def effect(r, block):   # seed baseline minus small-data model, both against the other seed's 100% model
        o = r["vit_matched_other_seed"]
        return diff(o["baseline"][f"cka_{block}_block"], o["cka"][small][f"cka_{block}_block"])
    last = per_seed(reps, lambda r: effect(r, "last"))
    grows = per_seed(reps, lambda r: diff(effect(r, "last"), effect(r, "first")))
    first_small = per_seed(reps, lambda r: r["vit_matched_other_seed"]["cka"][small]["cka_first_block"])
    t = lambda f: interval(per_seed(reps, f)).text()   # noqa: E731
    o = "vit_matched_other_seed"
    return Judgement(
        f"CKA with a 100% ViT of the other training seed (matched compute), first / last block: the {small} model "
        f"{t(lambda r: r[o]['cka'][small]['cka_first_block'])} / {t(lambda r: r[o]['cka'][small]['cka_last_block'])}; "
        f"another 100% model (seed baseline) {t(lambda r: r[o]['baseline']['cka_first_block'])} / "
        f"{t(lambda r: r[o]['baseline']['cka_last_block'])} ({_seeds_text(reps)})",
        controls=(_steps_control(v),),
        central=check(f"at the last block, the {small} model less similar to a 100% model than another 100% model is",
                      last, ">", 0.0),
        secondary=(check(f"first-block CKA of the {small} model ≥ {F11_FIRST_BLOCK:g}", first_small, "≥",
                         F11_FIRST_BLOCK, PROJECT + " of “already similar” (Fig 12)"),
                   check("the data effect larger at the last block than at the first", grows, ">", 0.0)))


def _f12(v):
    reps = replicates(v)
    small = v["smallest_fraction"]["ViT"]
    if v["probe_mid_gain_points_matched"] is None:
        return Judgement("no matched-compute 100% ViT in this run",
                         not_measured="a data effect at matched compute needs a 100% ViT trained for the small-data "
                                      "models' steps")
    gain = per_seed(reps, lambda r: r["probe_mid_gain_points_matched"]["vit"])
    same = per_seed(reps, lambda r: r["probe_mid_vit_minus_resnet_points"])
    return Judgement(
        f"mid-network probe, 100% minus {small} model at matched compute: {interval(gain).text(1, unit=' points')} "
        f"(long-schedule 100% model: {interval(per_seed(reps, lambda r: r['probe_mid_gain_points_long']['vit'])).text(1, unit=' points')}); "
        f"ViT minus ResNet at 100%, same readout {interval(same).text(1, unit=' points')} ({_seeds_text(reps)})",
        controls=(_steps_control(v), _accuracy_control(reps)),
        central=check("mid-network probe better at 100% than at the smallest fraction", gain, ">", 0.0, digits=1,
                      unit=" points"),
        size=(check("by about the paper's 30 points (≥ 30)", gain, "≥", 30.0, PAPER + " (Fig 13: ~30% absolute)", 1,
                    unit=" points"),),
        secondary=(check("ViT above the ResNet at 100% through the same readout", same, ">", 0.0, digits=1, unit=" points"),))


FINDINGS = [
    Finding(1, "Fig 1", "representation_structure",
            "ViT layers are uniformly similar; the ResNet has stages, low and high layers dissimilar", _f1,
            "a 6-block ViT and a 6-unit ResNet have few layers between bottom and top"),
    Finding(2, "Fig 2", "representation_structure",
            "the ResNet's lower half matches the ViT's lowest quarter; the ViT's last third matches no ResNet layer",
            _f2, "both small networks solve a 10-class task on 28-px images, so their top layers may converge on "
                 "the same class-separating representation"),
    Finding(3, "Fig 3", "local_global", "low blocks mix local and global heads; the highest blocks are all global",
            _f3, "local heads may need more data, as the paper's Fig 4 finds, or a different recipe (see the recipe "
                 "ablation)"),
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
    """One row per finding (of ``chapter`` only, if given): ``finding, figure, chapter, paper, measured, verdict,
    checks`` (a list of ``(kind, rule, state, value, origin)`` with kind in precondition / control / central /
    size / secondary) and ``hypothesis`` (empty when reproduced)."""
    rows = []
    for f in FINDINGS:
        if chapter is not None and f.chapter != chapter:   # one chapter's findings only (its "what it means")
            continue
        j = judge(f, results)
        rows.append({"finding": f.number, "figure": f.figure, "chapter": f.chapter, "paper": f.paper,
                     "measured": j.measured, "verdict": j.verdict,
                     "checks": [(kind, c.rule, c.state, c.value, c.origin) for kind, c in j.checks()],
                     "judged": {kind: c for kind, c in reversed(j.checks())},   # the first check of each kind
                     "not_measured": j.not_measured,
                     "hypothesis": f.hypothesis if j.verdict not in (REPRODUCED, NOT_MEASURED) else ""})
    return rows


def tally(rows: list[dict]) -> dict[str, int]:
    """How many findings got each verdict, in the order of :data:`VERDICTS`."""
    return {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}


def _why(row: dict, values: bool = True) -> str:
    def rules(kind, states=(FAILS, UNDECIDED)):
        return [f"{rule} ({state}{f': {value}' if values and value else ''})" for k, rule, state, value, _
                in row["checks"] if k == kind and state in states]
    v = row["verdict"]
    if v == NOT_MEASURED:
        return row["not_measured"]
    if v == UNTESTABLE:
        return "its precondition is absent: " + "; ".join(rules("precondition"))
    if v == CONFOUNDED:
        return "a control it needs is not matched: " + "; ".join(rules("control"))
    central = rules("central", (HOLDS, FAILS, UNDECIDED))[0]
    if v == NOT_DISTINGUISHABLE:
        return "the central effect's interval straddles its threshold: " + central
    if v in (OPPOSITE, NOT_REPRODUCED):
        return "the central criterion lies beyond the noise on the wrong side: " + central
    if v == DIRECTION_ONLY:
        return f"the direction holds beyond the noise ({central}); the size does not: " + "; ".join(rules("size"))
    if v == PARTLY:
        return f"the central criterion holds ({central}); not met: " + "; ".join(rules("secondary"))
    return "every criterion holds beyond the noise"


def meaning(chapter: str, results: dict) -> str:
    """A short Markdown "what it means" paragraph for ``chapter``: each of its findings, its verdict, and why
    (the criteria that decided it, without their values: the chapter's text and its opening give those once),
    and the untested hypothesis offered for a difference."""
    lines = []
    for row in table(results, chapter):
        line = (f"- **Finding {row['finding']}** ({row['figure']}): *{row['paper']}* — **{row['verdict']}**: "
                f"{_why(row, values=False)}.")
        if row["hypothesis"]:
            line += f" A possible reason, *not tested here*: {row['hypothesis']}."
        lines.append(line)
    return "\n".join(lines)


def takeaway(chapter: str, results: dict) -> str:
    """The chapter's opening lines: per finding, the paper's claim, this build's verdict and central number
    (the details follow in the chapter, the criteria in its "What it means")."""
    lines = []
    for row in table(results, chapter):
        central = row["judged"].get("central")
        value = f" ({central.value})" if central is not None and central.value else ""
        lines.append(f"- *{row['paper']}* (Finding {row['finding']}, {row['figure']}): **{row['verdict']}**{value}.")
    return "**In short.**\n\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# The conclusion's text

_MARK = {HOLDS: "✓", FAILS: "✗", UNDECIDED: "?"}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    """The conclusion's table: per finding, the paper's claim, the measured values with their intervals, each
    check (precondition, control, central, size, secondary: ✓ holds, ✗ fails, ? undecided) with its interval and
    the threshold's origin, and the verdict."""
    lines = [f"| # | The paper (figure) | Measured here (mean [{LEVEL:.0%} interval over training seeds and draws]) "
             "| Criteria | Verdict |", "|---|---|---|---|---|"]
    for r in rows:
        checks = "<br>".join(f"{_MARK[state]} *{kind}*: {_cell(rule)}" + (f" [{_cell(value)}]" if value else "")
                             + (f" (threshold: {_cell(origin)})" if origin and kind in ("size", "secondary", "central",
                                                                                         "precondition") else "")
                             for kind, rule, state, value, origin in r["checks"]) or "–"
        lines.append(f"| {r['finding']} | {_cell(r['paper'])} ({r['figure']}) | {_cell(r['measured'])} | {checks} "
                     f"| **{r['verdict']}** |")
    return "\n".join(lines)


def vocabulary() -> str:
    """Markdown list of the verdicts and what each means."""
    return "\n".join(f"- **{v}**: {VERDICT_MEANINGS[v]}" for v in VERDICTS)


CHAPTER_TITLES = {"representation_structure": "Representation structure", "local_global": "Local and global information",
                  "skip_connections": "Skip connections", "spatial": "Spatial information", "data_scale": "Scale of data"}
OUTCOMES_FILE = "outcomes.md"   # written beside the results by the conclusion; the intro includes it


_PLAIN = {  # the intro's plain sentence for each verdict group
    REPRODUCED: "Reproduced, direction and size, beyond the seed-to-seed noise",
    DIRECTION_ONLY: "The paper's direction, beyond the noise, but smaller than the paper's effect",
    PARTLY: "The central claim holds beyond the noise; another part of the finding does not",
    NOT_DISTINGUISHABLE: "Not told apart from the noise between training seeds",
    OPPOSITE: "The opposite of the paper's direction, beyond the noise",
    NOT_REPRODUCED: "Not reproduced: the quantity lies beyond the noise on the wrong side of the paper's level",
    UNTESTABLE: "Untestable at this scale (a precondition is absent)",
    CONFOUNDED: "Confounded (a comparison the claim needs is not matched)",
    NOT_MEASURED: "Not measured in this build",
}


def outcome_table(rows: list[dict]) -> str:
    """The intro's summary: the tally, then per verdict (in :data:`VERDICTS` order) one plain sentence naming
    its findings, the paper's claim and this build's central number."""
    lines = [f"**{tally_text(rows)}**", ""]
    for verdict in VERDICTS:
        group = [r for r in rows if r["verdict"] == verdict]
        if not group:
            continue
        lines.append(f"- **{_PLAIN[verdict]}:** " + "; ".join(
            f"{r['paper']} (Finding {r['finding']}, {r['figure']}"
            + (f": {r['judged']['central'].value}" if r["judged"].get("central") is not None
               and r["judged"]["central"].value else "") + ")" for r in group) + ".")
    lines += ["", "The conclusion chapter gives every criterion with its interval and the origin of its threshold."]
    return "\n".join(lines) + "\n"


def write_outcomes(rows: list[dict], folder: str | os.PathLike = RESULTS_DIR, name: str = OUTCOMES_FILE,
                   text: str | None = None) -> Path:
    """Write :func:`outcome_table` (or ``text``) to ``folder/name`` (atomically) and return its path."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome_table(rows) if text is None else text)
    tmp.replace(path)
    return path


_SYNTHESIS = (  # (heading, verdicts): what the small models show, what they contradict, what is left open
    ("What the small models show, beyond the noise between trainings", (REPRODUCED, DIRECTION_ONLY, PARTLY)),
    ("Where they go the other way", (OPPOSITE, NOT_REPRODUCED)),
    ("What the noise between trainings hides at this scale", (NOT_DISTINGUISHABLE,)),
    ("What could not be judged here", (UNTESTABLE, CONFOUNDED, NOT_MEASURED)),
)


def synthesis(rows: list[dict]) -> str:
    """The conclusion's synthesis, from the verdicts: the paper's claims grouped by what this build shows
    (held beyond the noise, in full or in direction), contradicts, cannot tell from noise, or could not judge."""
    parts = []
    for heading, verdicts in _SYNTHESIS:
        group = [r for r in rows if r["verdict"] in verdicts]
        if group:
            parts.append(f"**{heading}.** " + " ".join(
                f"{r['paper'][0].upper() + r['paper'][1:]} (Finding {r['finding']}: {r['verdict']})." for r in group))
    return "\n\n".join(parts)


def tally_text(rows: list[dict]) -> str:
    """``"Of 12 findings: 2 reproduced, 3 partly, ..."`` (verdicts with no finding left out)."""
    counts = tally(rows)
    return f"Of {len(rows)} findings: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "."


def explanations(rows: list[dict]) -> str:
    """One line per finding not reproduced: why (the failed check), and the untested hypothesis offered."""
    lines = []
    for r in rows:
        if r["verdict"] in (REPRODUCED, NOT_MEASURED):
            continue
        line = f"- **Finding {r['finding']}** ({r['verdict']}): {_why(r)}."
        if r["hypothesis"]:
            line += f" A possible reason, *an untested hypothesis*: {r['hypothesis']}."
        lines.append(line)
    return "\n".join(lines)

"""The evidence engine: recorded numbers, intervals over training seeds and draws, checks and verdicts.

The rules that judge each of the paper's findings live with their chapters (``FINDINGS`` in
:mod:`vitcnn_utils.chapters.<name>`), which build them from this module; :mod:`vitcnn_utils.findings` gathers
them and writes the book's text about them.

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

import dataclasses
import json
import math
import os
import statistics
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cka import student_t_quantile

RESULTS_DIR = "book/chapters/results"


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


class RecordTypeError(TypeError):
    """A field of a chapter's record holds a value of another type than its typed record declares."""


@dataclass(frozen=True, kw_only=True)
class ChapterRecord:
    """Base of a chapter's typed record: the fields its findings' rules read, declared with their types in a
    frozen dataclass next to the rules (``<chapter>.Record``). A chapter's JSON record may hold more (what its
    figures and tables draw); :meth:`from_json` takes the declared fields, checks each one's type and raises
    :class:`MissingResult` for one that is absent. Per-draw values are ``list[float]`` (one per draw); a value
    recorded as undefined (``None``: NaN or infinite when measured) reads as NaN, which :func:`draws` rejects.

    Attributes:
        chapter: the chapter the record is of (named in errors).
        replicates: the records of the chapter's further training seeds (same type, see :func:`replicates`).
    """
    chapter: str = "?"
    replicates: tuple = ()

    @classmethod
    def from_json(cls, values: dict, chapter: str | None = None):
        """The typed record of ``values`` (a chapter's JSON record as :func:`load_results` reads it), with its
        ``"replicates"`` as records of the same type."""
        chapter = chapter or "?"
        own = _typed(cls, values, "", chapter)
        reps = tuple(_typed(cls, r, f"replicates[{k}].", chapter) for k, r in enumerate(values.get("replicates") or ()))
        return dataclasses.replace(own, chapter=chapter, replicates=reps)


def _typed(tp, value, path: str, chapter: str):
    """``value`` (parsed JSON) as type ``tp``: a dataclass (from a dict, by its fields), ``list[T]``,
    ``dict[str, T]``, ``T | None``, ``float`` (``None`` reads as NaN), ``int``, ``str``, ``bool``."""
    where = path.rstrip(".") or "the record"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecordTypeError(f"{where} of the {chapter!r} results should be a mapping of {tp.__name__}'s "
                                  f"fields, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        own = {f.name for f in dataclasses.fields(ChapterRecord)}
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in own:
                continue
            if f.name not in value:
                raise MissingResult(f"the results of chapter {chapter!r} have no field {path + f.name!r}: rerun "
                                    f"the chapter (python -m vitcnn_utils.tools.book -c {chapter}) or update its "
                                    f"typed record ({tp.__name__})")
            kwargs[f.name] = _typed(hints[f.name], value[f.name], f"{path}{f.name}.", chapter)
        return tp(**kwargs)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value, path, chapter)
    if origin is list and isinstance(value, list):
        return [_typed(args[0], v, f"{where}[{k}].", chapter) for k, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _typed(args[1], v, f"{where}[{k!r}].", chapter) for k, v in value.items()}
    if tp is float and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))):
        return math.nan if value is None else float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    wanted = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
    per_draw = " (one value per draw)" if tp == list[float] else ""
    raise RecordTypeError(f"{where} of the {chapter!r} results should be {wanted}{per_draw}, got "
                          f"{type(value).__name__} {value!r:.60}: rerun the chapter or fix what it records")


def replicates(record: ChapterRecord) -> list[ChapterRecord]:
    """The records of every training seed of a chapter: its own (seed 0) and its ``replicates`` (the same chapter
    run with every model's seed twin, see :mod:`vitcnn_utils.seeds`)."""
    return [record, *record.replicates]


def per_seed(reps: list[ChapterRecord], quantity: Callable[[ChapterRecord], list]) -> list[list[float]]:
    """``quantity(record)`` (a list over draws) for each training seed's record."""
    return [list(quantity(v)) for v in reps]


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings: where it is measured, what the paper reports, and its rule.
    ``judge(record)`` gets the chapter's typed record (``record``, a :class:`ChapterRecord` subclass, read from
    the chapter's JSON by :meth:`ChapterRecord.from_json`) and returns a :class:`Judgement`. ``hypothesis`` is a
    possible explanation of a difference at this project's scale: an *untested* hypothesis, shown as such."""
    number: int
    figure: str
    chapter: str
    paper: str
    judge: Callable[[ChapterRecord], Judgement]
    hypothesis: str = ""
    record: type = dataclasses.field(kw_only=True)


def seeds_text(reps) -> str:
    """What the intervals of ``reps`` (one record per training seed) span, for a rule's measured text."""
    text = runs_text(len(reps), len(draws(reps[0].seeds, "seeds")))
    return text if len(reps) > 1 else text.replace("1 training seed", "one training seed") + ": image-draw noise only"

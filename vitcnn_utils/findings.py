"""The paper's twelve findings, judged on this build's recorded numbers, and the book's text about them.

Each chapter declares the findings it measures (``FINDINGS`` in :mod:`vitcnn_utils.chapters.<name>`: the paper's
claim, its rule, an untested hypothesis), built on :mod:`vitcnn_utils.evidence` (intervals over training seeds
and draws, checks, verdicts; see its docstring for the rule vocabulary). This module gathers them in
:data:`FINDINGS`, judges each on the chapters' recorded results (:func:`table`), and writes what the pages show
from the verdicts: a chapter's opening (:func:`takeaway`) and "what it means" (:func:`meaning`), the
conclusion's table and synthesis, and the introduction's outcomes.

The engine's names (``record``, ``load_results``, ``interval``, ``check``, the verdicts, ...) are available here
too, so a notebook needs one import.
"""
from __future__ import annotations

import os
from pathlib import Path

from .chapters import data_scale, local_global, representation_structure, skip_connections, spatial
from .evidence import (  # noqa: F401  (re-exported: the notebooks' and tools' one import)
    CONFOUNDED, DIRECTION_ONLY, FAILS, HOLDS, LEVEL, NOT_DISTINGUISHABLE, NOT_MEASURED, NOT_REPRODUCED, OPPOSITE,
    PAPER, PARTLY, PROJECT, REPRODUCED, RESULTS_DIR, UNDECIDED, UNTESTABLE, VERDICT_MEANINGS, VERDICTS, Check,
    ChapterRecord, Finding, Interval, Judgement, MissingResult, RecordTypeError, Spread, UndefinedValue, _plain, check,
    decide, diff, draws, flag, fmt, interval, load_results, over_seeds, pct, per_seed, record, replicates, runs_text,
    seeds_text, spread, t_quantile)

FINDINGS = [*representation_structure.FINDINGS, *local_global.FINDINGS, *skip_connections.FINDINGS,
            *spatial.FINDINGS, *data_scale.FINDINGS]


def judge(finding: Finding, results: dict) -> Judgement:
    """``finding``'s :class:`Judgement` on ``results`` (``{chapter: values}``); a chapter that did not run is
    not measured, a missing field raises :class:`MissingResult`."""
    if finding.chapter not in results:
        return Judgement(f"(the {finding.chapter} chapter did not run in this build)",
                         not_measured=f"no results from {finding.chapter}")
    try:
        return finding.judge(finding.record.from_json(results[finding.chapter], finding.chapter))
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

"""The measured numbers behind the book's conclusion.

Each chapter records the numbers its text reports with :func:`record` (one JSON file per chapter in the
results folder, written atomically); the conclusion chapter reads them all with :func:`load` and judges each
of the paper's findings against them with the rules in :data:`FINDINGS`, so the verdict table always
follows from what this build computed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

RESULTS_DIR = "book/chapters/results"


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


def load(folder: str | os.PathLike = RESULTS_DIR) -> dict[str, dict]:
    """``{chapter: values}`` for every chapter recorded in ``folder``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}

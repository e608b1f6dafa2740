"""Training seeds as replicates of a whole chapter.

Every zoo model a verdict compares has a *seed twin*, ``<name>-s1``: the same spec trained with seed 1
(:data:`vitcnn_utils.zoo.SEED_REPLICATED` says what a twin may differ in). A chapter run once with the seed-0
models and once with every model swapped for its twin gives two independent replicates of the experiment;
:mod:`vitcnn_utils.findings` judges each number over both (training seeds) and over the image draws of each.

The swap is symmetric (``zoo:vit-cls`` ↔ ``zoo:vit-cls-s1``), so a chapter argument that already names a
second seed (a seed-to-seed baseline) names the first one in the twin run, and the pairing is kept.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import zoo

SUFFIX = "-s1"


def twin(name: str) -> str:
    """The seed twin of a zoo model name: ``"zoo:vit-cls"`` → ``"zoo:vit-cls-s1"`` and back.

    Raises:
        ValueError: ``name`` is not a zoo model with a twin in :data:`vitcnn_utils.zoo.SPECS` (your own or
            untrained models have none: run the chapter with ``seed_twins=False``).
    """
    if not isinstance(name, str) or not name.startswith("zoo:"):
        raise ValueError(f"{name!r} is not a zoo model, so it has no seed twin: run the chapter with "
                         "seed_twins=False (its intervals then cover image draws only), or train a second seed of "
                         "your model and pass it yourself")
    base = name[len("zoo:"):]
    other = base[:-len(SUFFIX)] if base.endswith(SUFFIX) else base + SUFFIX
    if other not in zoo.SPECS:
        raise ValueError(f"zoo model {base!r} has no seed twin (no {other!r} in vitcnn_utils.zoo.SPECS); twins "
                         f"exist for: {', '.join(zoo.SEED_REPLICATED)}")
    return "zoo:" + other


def twin_arguments(arguments: Mapping[str, Any], model_keys: tuple[str, ...]) -> dict[str, Any]:
    """``arguments`` of a chapter's ``run`` with every model named under ``model_keys`` swapped for its twin
    (a key's value may be a name, ``None``, a list of names, or a ``{label: name}`` mapping of names)."""
    out = dict(arguments)
    for key in model_keys:
        value = arguments.get(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            out[key] = {k: twin(v) for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            out[key] = [twin(v) for v in value]
        else:
            out[key] = twin(value)
    return out


def replicate(run: Callable[..., Any], arguments: Mapping[str, Any], model_keys: tuple[str, ...]) -> list:
    """``[run(**twin arguments)]``: the chapter's second training seed (see the module docstring)."""
    return [run(**twin_arguments(arguments, model_keys))]

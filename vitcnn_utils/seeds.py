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


def _each(value, fn):
    """``fn`` applied to a model argument's name(s): a name, a list of names, or a ``{label: name}`` mapping."""
    if isinstance(value, Mapping):
        return {k: fn(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fn(v) for v in value]
    return fn(value)


def twin_arguments(arguments: Mapping[str, Any], model_keys: tuple[str, ...]) -> dict[str, Any]:
    """``arguments`` of a chapter's ``run`` with every model named under ``model_keys`` swapped for its twin
    (a key's value may be a name, ``None``, a list of names, or a ``{label: name}`` mapping of names)."""
    return {**arguments, **{key: _each(arguments[key], twin) for key in model_keys
                            if arguments.get(key) is not None}}


def missing_twins(arguments: Mapping[str, Any], model_keys: tuple[str, ...]) -> list[str]:
    """The seed twins of the models in ``arguments`` that are specified but not trained yet (zoo names without
    ``zoo:``); a model that cannot have a twin raises :class:`ValueError` (see :func:`twin`)."""
    twins = set()
    for key in model_keys:
        if arguments.get(key) is not None:
            _each(arguments[key], lambda name: twins.add(twin(name)[len("zoo:"):]))
    return sorted(twins - set(zoo.manifest()))


def replicate(run: Callable[..., Any], arguments: Mapping[str, Any], model_keys: tuple[str, ...],
              require: bool = False) -> list:
    """``[run(**twin arguments)]``: the chapter's second training seed (see the module docstring); ``[]`` when a
    twin is not trained yet (the verdicts then cover image draws only, and :func:`note` says so on the page), or
    a :class:`ValueError` naming the command that trains them with ``require=True``."""
    missing = missing_twins(arguments, model_keys)
    if missing:
        if require:
            raise ValueError(f"seed twins not trained yet: {', '.join(missing)}; train them with "
                             f"python -m vitcnn_utils.zoo --only {' '.join(missing)}")
        return []
    return [run(**twin_arguments(arguments, model_keys))]


def note(arguments: Mapping[str, Any], model_keys: tuple[str, ...], seed_twins: bool) -> str:
    """Markdown for the chapter page: which training seeds its numbers cover."""
    if not seed_twins:
        return ("*One training seed per model in this run (`seed_twins` is off): the intervals cover image draws "
                "only, not the larger differences between trainings.*")
    missing = missing_twins(arguments, model_keys)
    if missing:
        return (f"*Second training seeds not trained yet: {', '.join(f'`{m}`' for m in missing)} (`python -m "
                f"vitcnn_utils.zoo --only {' '.join(missing)}`). Until they are, this chapter's intervals cover image "
                "draws only, not the larger differences between trainings.*")
    return "*Every model here was also run as its seed-1 twin: the intervals cover training seeds and image draws.*"

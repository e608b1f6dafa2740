"""Each chapter declares its parameters once (``Params``): the notebook's parameters cell, ``run`` and the paper
parameter files are tied to that declaration here."""
import importlib
from pathlib import Path

import pytest
import yaml

from vitcnn_utils.chapters.params import BOOK_FIELDS, ChapterParams
from vitcnn_utils.tools import book

ROOT = Path(__file__).resolve().parents[1]
MEASURING = book.MEASURING


def plain(value):
    """Tuples as lists, recursively (a notebook writes lists, a frozen declaration tuples)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def declared(chapter):
    return importlib.import_module(f"vitcnn_utils.chapters.{chapter}").Params


@pytest.mark.parametrize("chapter", MEASURING)
def test_notebook_parameters_cell_is_the_declaration(chapter):
    cell = book.chapter_parameters(ROOT / "notebooks" / f"{chapter}.ipynb", {})
    defaults = declared(chapter).defaults()
    assert sorted(cell) == sorted(defaults), "the parameters cell and Params list different names"
    for name, value in defaults.items():
        assert plain(cell[name]) == plain(value), name


@pytest.mark.parametrize("chapter", MEASURING)
def test_paper_parameters_are_declared_with_the_declared_types(chapter):
    path = ROOT / "params" / "paper" / f"{chapter}.yaml"
    values = yaml.safe_load(path.read_text())
    defaults = declared(chapter).defaults()
    assert set(values) <= set(defaults), set(values) - set(defaults)
    errors = [book.parameter_type_error(k, v, defaults[k]) for k, v in values.items()]
    assert [e for e in errors if e] == []


@pytest.mark.parametrize("chapter", MEASURING)
def test_run_takes_the_declaration_or_overrides_of_it(chapter):
    module = importlib.import_module(f"vitcnn_utils.chapters.{chapter}")
    with pytest.raises(TypeError, match="unknown parameter\\(s\\) n_imagse; this chapter's parameters are: .*n_images"):
        module.run(n_imagse=10)
    with pytest.raises(ValueError, match="n_draws must be a whole number of at least 1, got 0"):
        module.run(n_draws=0)
    with pytest.raises(TypeError, match="params must be a"):
        module.run(ChapterParams())


def test_resolve_applies_overrides_without_touching_the_given_params():
    from vitcnn_utils.chapters.skip_connections import Params
    base = Params(n_images=64)
    out = Params.resolve(base, {"seed": 3})
    assert (out.n_images, out.seed, base.seed) == (64, 3, 0)
    assert Params.resolve(None, None) == Params()
    args = out.run_arguments()
    assert not set(BOOK_FIELDS) & set(args) and args["n_images"] == 64


def test_from_namespace_names_what_the_cell_lacks():
    from vitcnn_utils.chapters.skip_connections import Params
    namespace = plain(Params.defaults())
    assert Params.from_namespace(namespace).n_images == Params().n_images
    del namespace["batch_size"]
    with pytest.raises(NameError, match="does not define batch_size"):
        Params.from_namespace(namespace)


def test_every_chapter_draws_its_images_through_one_loop():
    """chapters.params.draws: draw d on seed + d, the data fingerprinted once, the shared cache-key part, and the
    same images as the plain data calls."""
    import torch

    from vitcnn_utils import cache
    from vitcnn_utils import data as vdata
    from vitcnn_utils.chapters import params as cp

    p = cp.ChapterParams(seed=7, n_draws=3)
    ds = cp.draws(p)
    assert [(d.index, d.seed) for d in ds] == [(0, 7), (1, 8), (2, 9)]
    assert ds[1].key(n=16, batch=8) == {"data": cache.data_fingerprint("fashion-mnist", None), "seed": 8,
                                        "image_size": None, "n": 16, "batch": 8}
    got, want = list(ds[2].images(16, 8)), list(vdata.analysis_batches("fashion-mnist", 16, 8, seed=9))
    assert len(got) == len(want) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                              for a, b in zip(got, want))
    fit = list(ds[0].probe_images(2, 2, 16, 8)[0])
    assert torch.equal(fit[0][0], list(vdata.probe_batches("fashion-mnist", 2, 2, 16, 8, seed=7)[0])[0][0])

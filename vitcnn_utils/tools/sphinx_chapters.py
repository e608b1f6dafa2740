"""Sphinx extension that makes ``jupyter-book build .`` build the whole book.

Listed in ``_config.yml`` (``sphinx: extra_extensions``). Before Sphinx reads any source, it executes every
chapter the table of contents names (``book/chapters/<chapter>``) with the book runner's
:func:`vitcnn_utils.tools.book.run_chapter` on the embedded default (no parameters), in the toc's order with the
conclusion last: the same runner, fingerprints and results cache as ``make book``, so chapters that are up to
date are not re-executed and a cold build executes them all. A chapter that fails stops the build with a
non-zero exit and one line naming it (papermill's error is printed above it).

It also draws the figure of the static background page (:func:`background_figures`) in every build, the two
cases below included: it needs no model and no chapter.

Two cases run no chapter:

* ``make book`` (``python -m vitcnn_utils.tools.book``) has just executed the chapters it was asked for and calls
  ``jupyter-book`` with ``VITCNN_CHAPTERS_EXECUTED=1`` in the environment;
* a chapter last executed with explicit parameters (e.g. ``-f params/paper/spatial.yaml``) is kept as it is,
  rather than silently replaced by a default run; ``python -m vitcnn_utils.tools.book -c <chapter>`` returns it to
  the default.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

EXECUTED_ENV = "VITCNN_CHAPTERS_EXECUTED"
CHAPTERS_DIR = PurePosixPath("book/chapters")      # where the toc expects executed chapters (book.main's default)
FIGURES_DIR = CHAPTERS_DIR / "figures"             # the chapters' figures_dir default; also the static pages'


def toc_chapters(site_map) -> list[str]:
    """The chapters (names in :data:`vitcnn_utils.tools.book.CHAPTERS`) that a sphinx-external-toc site map lists
    under ``book/chapters/``, in toc order, with chapters that read the others' results moved last."""
    from . import book

    order: list[str] = []

    def walk(docname: str) -> None:
        if docname in order:
            return
        order.append(docname)
        for child in site_map[docname].child_files():
            if child in site_map:
                walk(child)
    walk(site_map.root.docname)
    names = []
    for docname in order:
        path = PurePosixPath(docname)
        stem = path.name.removesuffix(".ipynb")
        if path.parent == CHAPTERS_DIR and stem in book.CHAPTERS and stem not in names:
            names.append(stem)
    return [c for c in names if c not in book.READS_RESULTS] + [c for c in names if c in book.READS_RESULTS]


def _run_with_parameters(output: Path) -> dict | None:
    """The parameters an existing executed chapter was run with, if they are not the defaults."""
    import nbformat

    if not output.is_file():
        return None
    try:
        params = nbformat.read(output, as_version=4).metadata.get("vitcnn", {}).get("parameters")
    except Exception:                                # unreadable: let the runner replace it
        return None
    return params or None


def execute_chapters(app, config) -> None:
    """``config-inited`` handler: execute the toc's chapters (see the module docstring)."""
    import os

    from . import book

    if os.environ.get(EXECUTED_ENV):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    out_dir = Path(app.srcdir) / CHAPTERS_DIR
    chapters = toc_chapters(config.external_site_map)
    if chapters:
        print(f"vitcnn: executing the chapters on the embedded default before the build (up-to-date ones are "
              f"skipped): {', '.join(chapters)}", flush=True)
    for chapter in chapters:
        kept = _run_with_parameters(out_dir / f"{chapter}.ipynb")
        if kept is not None and chapter not in book.READS_RESULTS:
            print(f"{chapter}: kept as executed with {kept} (python -m vitcnn_utils.tools.book -c {chapter} runs its "
                  f"default)", flush=True)
            continue
        try:
            book.run_chapter(chapter, {}, out_dir)
        except (Exception, SystemExit) as err:
            if not isinstance(err, SystemExit) or not isinstance(err.code, str):
                print(f"{type(err).__name__}: {err}", flush=True)
            raise SystemExit(f"jupyter-book build stopped: chapter {chapter} failed"
                             + (f": {err.code}" if isinstance(err, SystemExit) and isinstance(err.code, str)
                                else " (its error is above)")) from None


def background_figures(app, config) -> None:
    """``config-inited`` handler: draw the figures of the static pages (``book/background.md``: the CKA estimators
    on independent random features, :func:`vitcnn_utils.baselines.write_background_figure`) into
    ``book/chapters/figures/``. They depend on no model or chapter, take seconds, and are drawn in every build
    (also after ``make book``), so a page never refers to a figure that no executed chapter has written."""
    from .. import baselines

    baselines.write_background_figure(Path(app.srcdir) / FIGURES_DIR)


def setup(app):
    # after sphinx-external-toc (priority 900) has parsed _toc.yml into config.external_site_map
    app.connect("config-inited", execute_chapters, priority=950)
    app.connect("config-inited", background_figures, priority=960)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""`jupyter-book build .` is a front door: the _config.yml extension vitcnn_utils.tools.sphinx_chapters executes the
toc's chapters on the embedded default (through the book runner) before Sphinx reads them; a failing chapter
fails the build; `make book`, which has executed its chapters already, does not run them again."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml
from sphinx_external_toc.parsing import parse_toc_yaml


from vitcnn_utils.tools import book, sphinx_chapters


def _app(srcdir, toc: Path):
    return SimpleNamespace(srcdir=str(srcdir)), SimpleNamespace(external_site_map=parse_toc_yaml(toc))


@pytest.fixture
def calls(monkeypatch):
    """Record the book runner's calls instead of executing chapters."""
    monkeypatch.delenv(sphinx_chapters.EXECUTED_ENV, raising=False)
    seen = []
    monkeypatch.setattr(book, "run_chapter", lambda chapter, params, out_dir, force=False:
                        seen.append((chapter, params, Path(out_dir))))
    return seen


def _toc(tmp_path, files, root="book/intro"):
    path = tmp_path / "_toc.yml"
    path.write_text(yaml.safe_dump({"format": "jb-book", "root": root, "chapters": [{"file": f} for f in files]}))
    return path


def test_config_lists_the_extension():
    config = yaml.safe_load((book.ROOT / "_config.yml").read_text())
    assert "vitcnn_utils.tools.sphinx_chapters" in config["sphinx"]["extra_extensions"]


def test_handler_runs_exactly_the_toc_chapters_with_their_defaults(tmp_path, calls):
    sphinx_chapters.execute_chapters(*_app(tmp_path, book.ROOT / "_toc.yml"))
    assert calls == [(c, {}, tmp_path / "book" / "chapters") for c in book.CHAPTERS]


def test_handler_takes_the_toc_as_given_with_the_conclusion_last(tmp_path, calls):
    toc = _toc(tmp_path, ["book/chapters/conclusion", "book/background", "book/chapters/spatial",
                          "notebooks/local_global"])          # not an executed-chapter path: not run
    sphinx_chapters.execute_chapters(*_app(tmp_path, toc))
    assert [c for c, _, _ in calls] == ["spatial", "conclusion"]


def test_make_book_does_not_execute_the_chapters_twice(tmp_path, calls, monkeypatch):
    ran = {}
    monkeypatch.setattr(book.subprocess, "run", lambda cmd, **kw: ran.update(kw))
    book.build_html(tmp_path)                                  # what `make book` calls after executing chapters
    assert ran["env"][sphinx_chapters.EXECUTED_ENV] == "1"
    monkeypatch.setenv(sphinx_chapters.EXECUTED_ENV, "1")
    sphinx_chapters.execute_chapters(*_app(tmp_path, book.ROOT / "_toc.yml"))
    assert calls == []


def test_a_chapter_executed_with_parameters_is_kept(tmp_path, calls, capsys):
    out = tmp_path / "book" / "chapters"
    out.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(metadata={"vitcnn": {"key": "x", "parameters": {"n_images": 64}}})
    nbformat.write(nb, out / "spatial.ipynb")                 # e.g. a run of params/paper/spatial.yaml
    sphinx_chapters.execute_chapters(*_app(tmp_path, book.ROOT / "_toc.yml"))
    assert "spatial" not in [c for c, _, _ in calls] and len(calls) == len(book.CHAPTERS) - 1
    assert "spatial: kept as executed with {'n_images': 64}" in capsys.readouterr().out


def _book_root(tmp_path, files):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(book.ROOT / "_config.yml", root / "_config.yml")
    shutil.copytree(book.ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build", "chapters"))
    _toc(root, files)
    return root


@pytest.mark.parametrize("error", [SystemExit("spatial: a cell produced an error output: ValueError"),
                                   RuntimeError("kernel died")])
def test_a_failing_chapter_fails_jupyter_book_build(tmp_path, monkeypatch, error):
    from click.testing import CliRunner
    from jupyter_book.cli.main import build

    root = _book_root(tmp_path, ["book/chapters/spatial"])
    monkeypatch.delenv(sphinx_chapters.EXECUTED_ENV, raising=False)

    def fail(chapter, params, out_dir, force=False):
        raise error
    monkeypatch.setattr(book, "run_chapter", fail)
    result = CliRunner().invoke(build, [str(root)])
    assert result.exit_code != 0
    assert "jupyter-book build stopped: chapter spatial failed" in result.output + str(result.exception)
    assert not (root / "_build" / "html" / "book" / "chapters" / "spatial.html").exists()


def test_jupyter_book_build_executes_the_chapters_it_lacks(tmp_path):
    """A real `jupyter-book build` of a book whose toc holds the (cheap) conclusion: it is executed first."""
    root = _book_root(tmp_path, ["book/chapters/conclusion"])
    (root / "book" / "chapters").mkdir()
    stale = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("{glue:text}`sk_runs`")])
    nbformat.write(stale, root / "book" / "chapters" / ".skip_connections.running.ipynb")  # a killed run's file
    env = {k: v for k, v in os.environ.items() if k != sphinx_chapters.EXECUTED_ENV}
    proc = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(root)], env=env,
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "conclusion: executing with its defaults" in proc.stdout
    executed = nbformat.read(root / "book" / "chapters" / "conclusion.ipynb", as_version=4)
    assert executed.metadata["vitcnn"]["parameters"] == {}
    assert "Conclusion" in (root / "_build" / "html" / "book" / "chapters" / "conclusion.html").read_text()
    assert "nonexisting document" not in proc.stderr
    assert ".running" not in proc.stdout + proc.stderr                   # not read: no glue or toctree warnings

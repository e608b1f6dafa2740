"""Every chapter runs through papermill with tiny parameters; the book builds from those outputs."""
import shutil

import nbformat
import pytest

from vitcnn_utils.tools import book

TINY = {"vit": "arch:vit-cls", "vit_small_data": "arch:vit-cls-f03", "vit_gap": "arch:vit-gap", "resnet": "arch:resnet",
        "vit_no_skip": ["arch:vit-cls-noskip1", "arch:vit-cls-noskip3", "arch:vit-cls-noskip5"],
        "vit_fractions": {"3%": "arch:vit-cls-f03", "10%": "arch:vit-cls-f10", "30%": "arch:vit-cls-f30"},
        "resnet_fractions": {"3%": "arch:resnet-f03", "10%": "arch:resnet-f10", "30%": "arch:resnet-f30"},
        "vit_control": "arch:vit-cls-e3", "vit_matched": "arch:vit-cls-e3", "vit_seed": "arch:vit-cls-s1",
        "vit_gap_seed": "arch:vit-gap-s1", "vit_twin": "arch:vit-cls-s1", "resnet_twin": "arch:resnet-s1",
        "init_seeds": [0],
        "n_images": 48, "batch_size": 24, "n_erf_images": 4, "shots": 2, "val_per_class": 2, "n_test": 48,
        "n_draws": 1, "use_cache": False, "seed_twins": False}
FIGURES = {"representation_within", "representation_across", "attention_distance", "head_subset_cka",
           "receptive_fields", "skip_ratios", "no_skip_cka", "token_patch_cka", "probes_tokens", "data_scale_cka",
           "data_scale_probes", "representation_twin_cka", "cka_estimator_bias"}
WITHOUT_FIGURES = {"conclusion"}


@pytest.fixture(scope="module")
def built_book(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(book.ROOT / name, root / name)
    shutil.copytree(book.ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build", "chapters"))
    shutil.copytree(book.ROOT / "_static", root / "_static")          # the book's own CSS
    monkeypatch_module.setenv("TQDM_DISABLE", "1")
    outputs = {}
    for chapter in book.CHAPTERS:
        outputs[chapter] = book.run_chapter(chapter, _params(root), root / "book" / "chapters")
    return root, outputs, book.build_html(root)


def _params(root):
    return dict(TINY, figures_dir=str(root / "book" / "chapters" / "figures"),
                results_dir=str(root / "book" / "chapters" / "results"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_chapters_execute_without_errors_and_hide_parameters(built_book):
    _, outputs, _ = built_book
    for chapter, path in outputs.items():
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["vitcnn"]["parameters"]["n_images"] == 48
        outs = [o for c in nb.cells for o in c.get("outputs", [])]
        assert not [o for o in outs if o.get("output_type") == "error"]
        if chapter not in WITHOUT_FIGURES:
            assert any("image/png" in o.get("data", {}) for o in outs), f"{chapter} shows no figure"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and all("remove-cell" in c.metadata["tags"] for c in injected)
        # nothing but the book on the page: no streams (progress bars, warnings, prints), no bare object reprs
        # (the tiny book's untrained ResNet has constant layers, whose NaN CKA is warned about: expected here, and
        # absent from the zoo's trained models)
        streams = [o for o in outs if o.get("output_type") == "stream"
                   and "are constant over all" not in o.get("text", "")]
        assert not streams, f"{chapter} prints: {streams[0].get('text', '')[:200]!r}"
        plain = [o["data"]["text/plain"] for o in outs if set(o.get("data", {})) == {"text/plain"}]
        assert not plain, f"{chapter} shows a bare value: {plain[0][:200]!r}"



def test_every_number_the_prose_inserts_is_glued(built_book):
    """Chapter prose lives in the notebooks' Markdown; each ``{glue:text}`key``` it uses is glued by the executed
    notebook (a chapter's ``numbers()``), so no inserted number is missing from the page."""
    import re
    _, outputs, _ = built_book
    used_somewhere = False
    for chapter, path in outputs.items():
        nb = nbformat.read(path, as_version=4)
        used = {m for c in nb.cells if c.cell_type == "markdown" for m in re.findall(r"\{glue:\w+\}`([^`]+)`", c.source)}
        glued = {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb.cells for o in c.get("outputs", [])}
        assert used <= glued, f"{chapter}: prose inserts {sorted(used - glued)}, which nothing glued"
        used_somewhere |= bool(used)
    assert used_somewhere

def test_figures_saved_as_png(built_book):
    root, _, _ = built_book
    pngs = sorted((root / "book" / "chapters" / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= FIGURES
    assert all(p.stat().st_size > 10_000 for p in pngs)


def test_book_pages_exist_with_images_and_no_cdn(built_book):
    _, _, html = built_book
    for chapter in book.CHAPTERS:
        page = (html / "book" / "chapters" / f"{chapter}.html").read_text()
        if chapter not in WITHOUT_FIGURES:
            assert page.count("<img") >= 2, f"{chapter}.html has no images"
        assert "injected-parameters" not in page
    background = (html / "book" / "background.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in background and "cdn.jsdelivr.net" not in background
    assert "cka_estimator_bias.png" in background                  # drawn by the Sphinx extension, not a chapter
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_wide_figures_have_a_phone_layout_on_the_page(built_book):
    """The 2 x 2 no-skip heatmaps and the 12-panel findings figure come in two layouts; the browser picks one by
    screen width (tools/pages.responsive_figure); the introduction shows the findings figure's two files."""
    _, _, html = built_book
    for chapter in ("skip_connections", "conclusion"):
        page = (html / "book" / "chapters" / f"{chapter}.html").read_text()
        assert '<picture class="vitcnn-figure"><source media="(max-width: 600px)" srcset="data:image/png;base64,' \
            in page and '<img src="data:image/png;base64,' in page, chapter
    intro = (html / "book" / "intro.html").read_text()
    assert "findings_summary_narrow.png" in intro and 'class="vitcnn-narrow' in intro and 'class="vitcnn-wide' in intro
    assert "@media (max-width: 600px)" in (html / "_static" / "vitcnn.css").read_text()


def test_a_responsive_figure_embeds_both_layouts_and_closes_them():
    import base64
    import io
    import re

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from vitcnn_utils.tools import pages
    wide, narrow = plt.figure(figsize=(8, 2)), plt.figure(figsize=(4, 6))
    out = pages.responsive_figure(wide, narrow, 'the "alt" text').data
    assert not plt.fignum_exists(wide.number) and not plt.fignum_exists(narrow.number)
    small, big = re.findall(r'base64,([A-Za-z0-9+/=]+)"', out)
    assert Image.open(io.BytesIO(base64.b64decode(small))).size[1] > Image.open(io.BytesIO(base64.b64decode(big))).size[1]
    assert 'alt="the &quot;alt&quot; text"' in out and f"max-width: {pages.NARROW_MAX_PX}px" in out


def test_up_to_date_chapter_is_not_reexecuted(built_book, capsys):
    root, outputs, _ = built_book
    chapter = book.CHAPTERS[0]
    before = outputs[chapter].stat().st_mtime_ns
    book.run_chapter(chapter, _params(root), root / "book" / "chapters")
    assert "up to date" in capsys.readouterr().out and outputs[chapter].stat().st_mtime_ns == before


def test_fingerprint_covers_the_whole_library(tmp_path, monkeypatch):
    """A chapter is re-executed when any module of the package changes (not only the tools/ folder the runner
    lives in: that was a stale-output bug), the zoo manifest, or the recipe ablation's measurements."""
    names = {f.relative_to(book.PACKAGE).as_posix() for f in book.library_files()}
    assert {"findings.py", "cka.py", "chapters/spatial.py", "tools/book.py", "zoo/manifest.json"} <= names
    package = tmp_path / "vitcnn_utils"                   # a stand-in package, so no test edits the real one
    for name in ("findings.py", "chapters/spatial.py", "tools/book.py", "zoo/manifest.json"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(book, "PACKAGE", package)
    source = book.ROOT / "notebooks" / "spatial.ipynb"
    before = book._fingerprint(source, {})
    for name in ("findings.py", "zoo/manifest.json", "zoo/recipe_ablation.json"):
        (package / name).write_text("# an edit\n")
        after = book._fingerprint(source, {})
        assert after != before, name
        before = after
    (package / "zoo" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        book._fingerprint(source, {})


def test_conclusion_judges_every_finding_from_recorded_numbers(built_book):
    """Every chapter recorded its numbers, and the conclusion's table has a measured verdict for each finding."""
    from vitcnn_utils import findings

    root, outputs, html = built_book
    results = findings.load_results(root / "book" / "chapters" / "results")
    assert set(results) == set(book.CHAPTERS) - WITHOUT_FIGURES
    rows = findings.table(results)
    assert len(rows) >= 12
    # every finding's chapter ran; only values undefined for untrained tiny models (e.g. an infinite skip ratio
    # where timm initialises a ResNet branch to zero) may leave a finding unjudged
    assert not [r for r in rows if r["measured"].startswith("(no ")]
    assert sum(r["verdict"] != findings.NOT_MEASURED for r in rows) >= 10
    page = (html / "book" / "chapters" / "conclusion.html").read_text()
    assert page.count("<tr") >= len(rows) + 1


def test_chapter_needing_an_untrained_zoo_model_becomes_a_page_saying_so(tmp_path, monkeypatch):
    from vitcnn_utils import zoo
    from vitcnn_utils.zoo.__main__ import main as train_zoo

    trained = zoo.available()
    monkeypatch.setattr(zoo, "available", lambda: [n for n in trained if n != "vit-cls-noskip3"])  # not trained yet
    results = tmp_path / "results"
    results.mkdir()
    (results / "skip_connections.json").write_text("{}")          # stale numbers from an earlier build
    out = book.run_chapter("skip_connections", {"vit_no_skip": ["zoo:vit-cls-noskip3"],
                                                "results_dir": str(results)}, tmp_path / "out")
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["vitcnn"]["missing_models"] == ["vit-cls-noskip3"]
    assert len(nb.cells) == 1 and "python -m vitcnn_utils.zoo --only vit-cls-noskip3" in nb.cells[0].source
    with pytest.raises(SystemExit) as usage:                       # the suggested command accepts the name
        train_zoo(["--only", "vit-cls-noskip3", "--help"])
    assert usage.value.code == 0
    assert nb.cells[0].source.startswith("# Skip connections")
    assert not (results / "skip_connections.json").exists()        # the conclusion must not judge stale numbers


def test_a_zoo_name_not_in_the_zoo_is_an_error_listing_the_zoo(tmp_path):
    from vitcnn_utils import zoo

    path = tmp_path / "typo.yaml"
    path.write_text('vit: "zoo:vit-clss"\n')
    with pytest.raises(SystemExit) as exc:
        book.main(["-c", "representation_structure", "-f", str(path), "-o", str(tmp_path / "out"), "--no-build"])
    message = str(exc.value)
    assert "'zoo:vit-clss' is not a zoo model (did you mean 'zoo:vit-cls'?)" in message
    assert all(name in message for name in zoo.SPECS)
    assert not (tmp_path / "out").exists()                          # no placeholder page was written
    with pytest.raises(SystemExit, match=r"skip_connections: 'zoo:never' is not a zoo model; the zoo has: "):
        book.run_chapter("skip_connections", {"vit_no_skip": ["zoo:never"]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, says", [
    ("hello\n", "a single string: 'hello'"),
    ("- n_images: 10\n- seed: 1\n", "a list"),
    ("42\n", "a number: 42"),
    ("n_images: [10, 20\n", "not valid YAML"),
    ("n_images: 10\n  seed: 1\n", "not valid YAML"),
    ("1: 10\n", "parameter names must be words, got 1"),
])
def test_a_parameter_file_that_is_not_a_mapping_is_one_clear_line(tmp_path, text, says):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        book.main(["-c", "spatial", "-f", str(path), "--no-build"])
    message = str(exc.value)
    assert exc.value.code != 0 and message.startswith(f"{path}: ") and "\n" not in message
    assert says in message and "n_images: 100" in message          # what was wrong, and what to write instead


def test_a_bad_parameter_file_exits_non_zero_without_a_traceback(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text("n_images: [10, 20\n")
    (tmp_path / "none.yaml").unlink(missing_ok=True)
    for name, says in (("bad.yaml", "not valid YAML (expected ',' or ']', but got '<stream end>' at line 2"),
                       ("none.yaml", "no such parameter file")):
        run = subprocess.run([sys.executable, "-m", "vitcnn_utils.tools.book", "-c", "spatial", "-f",
                              str(tmp_path / name), "--no-build"], capture_output=True, text=True, cwd=book.ROOT)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.strip().splitlines() == [run.stderr.strip()] and says in run.stderr, run.stderr


def test_progress_formatting():
    assert book.format_elapsed(0) == "0:00" and book.format_elapsed(83.7) == "1:23"
    assert book.format_elapsed(3 * 3600 + 62) == "3:01:02"
    assert book.cell_summary("\n# Set-up\n%matplotlib inline\nimport torch\nx = 1") == "import torch"
    assert book.cell_summary("y = " + "a" * 100, width=20) == "y = " + "a" * 13 + "..."
    line = book.progress_line("[2/6] spatial", 3, 17, 125, "# comment\nheat = model_heatmaps(models)")
    assert line == "[2/6] spatial: cell 3/17 [2:05] heat = model_heatmaps(models)"


def test_runner_prints_progress_and_no_kernel_noise(tmp_path, capfd):
    """A tiny notebook through the book's runner: one line per code cell and the total, nothing from the kernel.

    The notebook makes its kernel record any SIGINT in a file: jupyter_client interrupts a kernel before it shuts
    it down (ipykernel then logs "KeyboardInterrupt caught in kernel" if a reply is still being sent); the runner
    shuts a finished notebook's kernel down without that interrupt."""
    trap = tmp_path / "sigint"
    cells = [nbformat.v4.new_markdown_cell("# Tiny"),
             nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("from pathlib import Path\nkernel = get_ipython().kernel\n"
                                       f"kernel.saved_sigint_handler = lambda *_: Path({str(trap)!r}).write_text('!')"),
             nbformat.v4.new_code_cell("# the answer\nprint(x * 2)")]
    source = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), source)
    book.execute_notebook(source, tmp_path / "out.ipynb", {"x": 21}, "[1/1] tiny", cwd=tmp_path)
    out, err = capfd.readouterr()
    lines = [line.strip() for line in out.splitlines()]
    prefix = "[1/1] tiny: cell "
    cells_run = [line[len(prefix):] for line in lines if line.startswith(prefix) and "still running" not in line]
    assert [line.split(" ")[0] for line in cells_run] == ["1/4", "2/4", "3/4", "4/4"]   # injected cell included
    assert cells_run[0].endswith("] x = 1") and cells_run[1].endswith("] x = 21")
    assert cells_run[3].endswith("] print(x * 2)")
    assert any(line.startswith("[1/1] tiny: done, 4 cells in ") for line in lines)
    assert "IPKernelApp" not in out + err and "KeyboardInterrupt" not in out + err
    assert "encryption" not in out + err, err
    assert not trap.exists(), "the kernel was sent SIGINT at shutdown"
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[4].outputs[0]["text"] == "42\n"


def test_run_chapters_runs_measuring_chapters_together_then_the_readers(monkeypatch, tmp_path):
    """--jobs 2: two measuring chapters at a time (longest first), the conclusion only after all of them, each
    kernel with cores // 2 threads; the first failure stops the chapters not started yet and is raised."""
    import threading
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(book.os, "cpu_count", lambda: 4)
    running, events, lock = set(), [], threading.Lock()
    both = threading.Barrier(2, timeout=10)

    def fake(chapter, params, out_dir, force=False, step=None):
        with lock:
            running.add(chapter)
            events.append(("start", chapter, frozenset(running)))
        if chapter in ("data_scale", "spatial"):
            both.wait()                                   # the two longest run at the same time
        with lock:
            running.discard(chapter)
            events.append(("end", chapter))
    monkeypatch.setattr(book, "run_chapter", fake)
    seconds = book.run_chapters(book.CHAPTERS, {}, tmp_path, jobs=2)
    assert set(seconds) == set(book.CHAPTERS)
    starts = [e[1] for e in events if e[0] == "start"]
    assert starts[:2] == ["data_scale", "spatial"] and starts[-1] == "conclusion"
    assert all(e[0] == "end" for e in events[-1:]) and events[-2] == ("start", "conclusion", frozenset({"conclusion"}))
    assert book.os.environ["OMP_NUM_THREADS"] == "2"

    def failing(chapter, params, out_dir, force=False, step=None):
        if chapter == "data_scale":
            raise SystemExit("data_scale: a cell produced an error output: ValueError")
        events.append(("ran", chapter))
    events.clear()
    monkeypatch.setattr(book, "run_chapter", failing)
    with pytest.raises(SystemExit, match="data_scale: a cell produced"):
        book.run_chapters(book.CHAPTERS, {}, tmp_path, jobs=1)
    assert events == []                                   # nothing after the failure, no conclusion
    with pytest.raises(SystemExit, match="--jobs must be a whole number of at least 1, got 0"):
        book.run_chapters(book.CHAPTERS, {}, tmp_path, jobs=0)

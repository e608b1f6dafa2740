"""Every chapter runs through papermill with tiny parameters; the book builds from those outputs."""
import shutil

import nbformat
import pytest

from vitcnn_utils import book

TINY = {"vit": "arch:vit-cls", "vit_small_data": "arch:vit-cls-f03", "vit_gap": "arch:vit-gap", "resnet": "arch:resnet",
        "vit_no_skip": ["arch:vit-cls-noskip1", "arch:vit-cls-noskip3", "arch:vit-cls-noskip5"],
        "vit_fractions": {"3%": "arch:vit-cls-f03", "10%": "arch:vit-cls-f10", "30%": "arch:vit-cls-f30"},
        "resnet_fractions": {"3%": "arch:resnet-f03", "10%": "arch:resnet-f10", "30%": "arch:resnet-f30"},
        "n_images": 48, "batch_size": 24, "n_erf_images": 4, "shots": 2, "val_per_class": 2, "n_test": 48,
        "use_cache": False}
FIGURES = {"representation_within", "representation_across", "attention_distance", "head_subset_cka",
           "receptive_fields", "skip_ratios", "no_skip_cka", "token_patch_cka", "probes_tokens", "data_scale_cka",
           "data_scale_probes"}
WITHOUT_FIGURES = {"conclusion"}


@pytest.fixture(scope="module")
def built_book(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(book.ROOT / name, root / name)
    shutil.copytree(book.ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build", "chapters"))
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
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_up_to_date_chapter_is_not_reexecuted(built_book, capsys):
    root, outputs, _ = built_book
    chapter = book.CHAPTERS[0]
    before = outputs[chapter].stat().st_mtime_ns
    book.run_chapter(chapter, _params(root), root / "book" / "chapters")
    assert "up to date" in capsys.readouterr().out and outputs[chapter].stat().st_mtime_ns == before


def test_conclusion_judges_every_finding_from_recorded_numbers(built_book):
    """Every chapter recorded its numbers, and the conclusion's table has a measured verdict for each finding."""
    from vitcnn_utils import findings

    root, outputs, html = built_book
    results = findings.load(root / "book" / "chapters" / "results")
    assert set(results) == set(book.CHAPTERS) - WITHOUT_FIGURES
    rows = findings.table(results)
    assert len(rows) >= 12
    # every finding's chapter ran; only values undefined for untrained tiny models (e.g. an infinite skip ratio
    # where timm initialises a ResNet branch to zero) may leave a finding unjudged
    assert not [r for r in rows if r["measured"].startswith("(no ")]
    assert sum(r["verdict"] != findings.NOT_MEASURED for r in rows) >= 10
    page = (html / "book" / "chapters" / "conclusion.html").read_text()
    assert page.count("<tr") >= len(rows) + 1


def test_chapter_needing_an_untrained_zoo_model_becomes_a_page_saying_so(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "skip_connections.json").write_text("{}")          # stale numbers from an earlier build
    out = book.run_chapter("skip_connections", {"vit_no_skip": ["zoo:vit-cls-noskip-never"],
                                                "results_dir": str(results)}, tmp_path / "out")
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["vitcnn"]["missing_models"] == ["vit-cls-noskip-never"]
    assert len(nb.cells) == 1 and "python -m vitcnn_utils.zoo --only vit-cls-noskip-never" in nb.cells[0].source
    assert nb.cells[0].source.startswith("# Skip connections")
    assert not (results / "skip_connections.json").exists()        # the conclusion must not judge stale numbers

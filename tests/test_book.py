"""Every chapter runs through papermill with tiny parameters; the book builds from those outputs."""
import shutil

import nbformat
import pytest

from vitcnn_utils import book

TINY = {"vit": "arch:vit-cls", "vit_small_data": "arch:vit-cls-f03", "resnet": "arch:resnet", "n_images": 48,
        "batch_size": 24, "n_erf_images": 4, "use_cache": False}


@pytest.fixture(scope="module")
def built_book(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(book.ROOT / name, root / name)
    shutil.copytree(book.ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build", "chapters"))
    monkeypatch_module.setenv("TQDM_DISABLE", "1")
    outputs = {}
    for chapter in book.CHAPTERS:
        params = dict(TINY, figures_dir=str(root / "book" / "chapters" / "figures"))
        outputs[chapter] = book.run_chapter(chapter, params, root / "book" / "chapters")
    return root, outputs, book.build_html(root)


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
        assert any("image/png" in o.get("data", {}) for o in outs), f"{chapter} shows no figure"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and all("remove-cell" in c.metadata["tags"] for c in injected)


def test_figures_saved_as_png(built_book):
    root, _, _ = built_book
    pngs = sorted((root / "book" / "chapters" / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"representation_within", "representation_across", "attention_distance",
                                      "head_subset_cka", "receptive_fields"}
    assert all(p.stat().st_size > 10_000 for p in pngs)


def test_book_pages_exist_with_images_and_no_cdn(built_book):
    _, _, html = built_book
    for chapter in book.CHAPTERS:
        page = (html / "book" / "chapters" / f"{chapter}.html").read_text()
        assert page.count("<img") >= 2, f"{chapter}.html has no images"
        assert "injected-parameters" not in page
    background = (html / "book" / "background.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in background and "cdn.jsdelivr.net" not in background
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_up_to_date_chapter_is_not_reexecuted(built_book, capsys):
    root, outputs, _ = built_book
    chapter = book.CHAPTERS[0]
    params = dict(TINY, figures_dir=str(root / "book" / "chapters" / "figures"))
    before = outputs[chapter].stat().st_mtime_ns
    book.run_chapter(chapter, params, root / "book" / "chapters")
    assert "up to date" in capsys.readouterr().out and outputs[chapter].stat().st_mtime_ns == before

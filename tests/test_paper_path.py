"""The paper's parameter files (params/paper/*.yaml), executed end to end on the CPU as a user runs them:

    python -m vitcnn_utils.tools.book -c <chapter> -f <file> --no-build

with only what cannot exist here overridden: ``device: cpu``, tiny image counts and batches (and probe shots),
``data`` an ImageNet-style folder generated here (real JPEG files of varied sizes, aspect ratios and colour
modes), and ``weights`` files written here with the random initial state of exactly the timm architectures the
files name (ViT-B/16 at 224 px, ResNet-50, SigLIP's GAP ViT-B/16, the data-scale pairs). Every other key (the
models, layers, image size, token positions) is the file's own. Each chapter must finish and write its figures
and results; the conclusion is then executed from those results and the HTML book built from it all.

Each architecture is built once per test run (session fixture); the results cache is a fresh folder, so
nothing is served from an earlier run.
"""
import json
import shutil

import nbformat
import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from vitcnn_utils import findings
from vitcnn_utils.tools import book

PAPER = book.ROOT / "params" / "paper"
CLASSES = ["n01440764", "n01443537", "n01484850", "n01491361"]      # 4 classes: 1 shot each = one batch of 4
TRAIN_PER_CLASS, VAL_PER_CLASS = 2, 2                              # fit + held-out shots; 8 analysis images
TINY = {"device": "cpu", "n_images": 8, "batch_size": 4, "n_erf_images": 4, "shots": 1, "val_per_class": 1,
        "n_test": 8, "n_draws": 1}                                  # run sizes; n_draws: one draw of the images
FIGURES = {"representation_structure": {"representation_within", "representation_across"},
           "local_global": {"attention_distance", "head_subset_cka", "receptive_fields"},
           "skip_connections": {"skip_ratios", "no_skip_cka"},
           "spatial": {"token_patch_cka", "probes_tokens"},
           "data_scale": {"data_scale_cka", "data_scale_probes"}}
ANALYSES = list(FIGURES)


def _paper(chapter):
    return yaml.safe_load((PAPER / f"{chapter}.yaml").read_text())


def make_imagenet_folder(root):
    """``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG`` under ``root``: JPEGs of varied sizes and aspect ratios
    (portrait, landscape, smaller than the 256-px resize, a grey-scale and a CMYK one, as ImageNet has)."""
    rng = np.random.default_rng(0)
    sizes = [(500, 375), (333, 500), (120, 90), (640, 480), (256, 256), (90, 200), (800, 300), (375, 500)]
    count = 0
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                w, h = sizes[count % len(sizes)]
                yy, xx = np.mgrid[0:h, 0:w]
                base = np.stack([(xx * (c + 1) * 255 // w), (yy * 255 // h), np.full_like(xx, 60 * c)], -1)
                pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                image = image.convert("L") if count == 5 else image.convert("CMYK") if count == 11 else image
                image.save(folder / f"{name}_{i:05d}.JPEG", quality=90)
                count += 1
    return root


def write_paper_weights(folder):
    """``{timm name: safetensors file}`` for every model the paper files name, each architecture built once
    (``pretrained=False``: its random initialisation, a different seed per name). Floating tensors are saved
    in bfloat16 (half the disk: ViT-B/16 is 346 MB in float32); loading copies them into the model's float32
    parameters, as it does any half-precision checkpoint."""
    names = sorted({name for chapter in ANALYSES for name in _paper(chapter)["weights"]})
    files = {}
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        files[name] = str(folder / f"{name}.safetensors")
        save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
                   for k, v in model.state_dict().items()}, files[name])
        del model
    return files


@pytest.fixture(scope="session")
def imagenet_folder(tmp_path_factory):
    return make_imagenet_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def paper_weights(tmp_path_factory):
    return write_paper_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def paper_book(tmp_path_factory, imagenet_folder, paper_weights):
    """A book folder (config, toc, text pages) whose chapters the tests execute; a fresh results cache."""
    root = tmp_path_factory.mktemp("paper_book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(book.ROOT / name, root / name)
    shutil.copytree(book.ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build", "chapters"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITCNN_CACHE", str(tmp_path_factory.mktemp("results_cache")))    # read by the kernels
        mp.setenv("TQDM_DISABLE", "1")
        yield {"root": root, "chapters": root / "book" / "chapters", "done": {}}


def _overrides(paper_book, imagenet_folder, paper_weights, chapter):
    params = _paper(chapter)
    chapters = paper_book["chapters"]
    known = book.chapter_parameters(book.ROOT / "notebooks" / f"{chapter}.ipynb", {})
    extra = {**{k: v for k, v in TINY.items() if k in known}, "data": str(imagenet_folder),
             "weights": {name: paper_weights[name] for name in params["weights"]},
             "figures_dir": str(chapters / "figures"), "results_dir": str(chapters / "results")}
    assert set(params["weights"]) == set(extra["weights"])
    return {**params, **extra}


def _run(paper_book, imagenet_folder, paper_weights, chapter):
    """Run ``chapter`` through the book's command line with its paper file plus the overrides (once)."""
    if chapter in paper_book["done"]:
        return paper_book["done"][chapter]
    params = _overrides(paper_book, imagenet_folder, paper_weights, chapter)
    path = paper_book["root"] / f"{chapter}.yaml"
    path.write_text(yaml.safe_dump(params))
    book.main(["-c", chapter, "-f", str(path), "-o", str(paper_book["chapters"]), "--no-build", "--force"])
    paper_book["done"][chapter] = (paper_book["chapters"] / f"{chapter}.ipynb", params)
    return paper_book["done"][chapter]


def _check_chapter(paper_book, imagenet_folder, paper_weights, chapter):
    output, params = _run(paper_book, imagenet_folder, paper_weights, chapter)
    nb = nbformat.read(output, as_version=4)
    assert nb.metadata["vitcnn"]["parameters"] == params
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    shown = [o.get("data", {}) for o in outputs]           # a PNG, or a figure with a phone layout (pages.py)
    assert sum("image/png" in d or 'class="vitcnn-figure"' in "".join(d.get("text/html", "")) for d in shown) \
        >= len(FIGURES[chapter])
    figures = paper_book["chapters"] / "figures"
    assert {p.stem for p in figures.glob("*.png")} >= FIGURES[chapter]
    assert all((figures / f"{f}.png").stat().st_size > 10_000 for f in FIGURES[chapter])
    recorded = json.loads((paper_book["chapters"] / "results" / f"{chapter}.json").read_text())
    assert recorded["n_images"] == params["n_images"]
    return nb, recorded


@pytest.mark.parametrize("chapter", ANALYSES)
def test_paper_file_leaves_no_zoo_default(chapter):
    """A chapter parameter the file does not set keeps the notebook's default: none of those may be a zoo model
    (Fashion-MNIST, 28 px), which would meet the paper's 224-px images (e.g. skip_connections' ``vit_control``)."""
    effective = book.chapter_parameters(book.ROOT / "notebooks" / f"{chapter}.ipynb", _paper(chapter))
    assert [k for k, v in effective.items() if "zoo:" in str(v)] == []


def test_paper_path_representation_structure(paper_book, imagenet_folder, paper_weights):
    _, rec = _check_chapter(paper_book, imagenet_folder, paper_weights, "representation_structure")
    assert rec["vit_layers"] > 12 * 4 and rec["resnet_layers"] > 16 * 3      # every sublayer of ViT-B and ResNet-50


def test_paper_path_local_global(paper_book, imagenet_folder, paper_weights):
    _, rec = _check_chapter(paper_book, imagenet_folder, paper_weights, "local_global")
    assert rec["image_px"] == 224 and rec["vit_erf_layers"] == _paper("local_global")["vit_erf_layers"]


def test_paper_path_skip_connections(paper_book, imagenet_folder, paper_weights):
    _, rec = _check_chapter(paper_book, imagenet_folder, paper_weights, "skip_connections")
    assert len(rec["vit_sublayers"]) == 24 and len(rec["resnet_units"]) == 16
    assert rec["no_skip"] == []                                               # the paper file lists no such ViTs


def test_paper_path_spatial(paper_book, imagenet_folder, paper_weights):
    _, rec = _check_chapter(paper_book, imagenet_folder, paper_weights, "spatial")
    assert rec["chance"] == pytest.approx(1 / len(CLASSES))                  # the data's classes, not the heads'
    assert rec["n_fit"] == len(CLASSES) and rec["n_val"] == len(CLASSES) and rec["n_test"] == 8


def test_paper_path_data_scale(paper_book, imagenet_folder, paper_weights):
    _, rec = _check_chapter(paper_book, imagenet_folder, paper_weights, "data_scale")
    assert rec["num_classes"] == len(CLASSES)                                # the data's, not the heads' 1,000


def test_paper_path_conclusion(paper_book, imagenet_folder, paper_weights):
    """The conclusion judges every finding from the paper runs' recorded numbers, and the book renders."""
    for chapter in ANALYSES:
        _run(paper_book, imagenet_folder, paper_weights, chapter)
    results_dir = paper_book["chapters"] / "results"
    out = book.run_chapter("conclusion", {"results_dir": str(results_dir), "figures_dir": str(paper_book["chapters"] / "figures")},
                           paper_book["chapters"])
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    rows = findings.table(findings.load_results(results_dir))
    assert not [r for r in rows if r["measured"].startswith("(no ")]
    html = book.build_html(paper_book["root"])
    page = (html / "book" / "chapters" / "conclusion.html").read_text()
    assert page.count("<tr") >= len(rows) + 1
    for chapter in ANALYSES:
        assert (html / "book" / "chapters" / f"{chapter}.html").read_text().count("<img") >= len(FIGURES[chapter])

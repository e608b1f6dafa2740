"""Build the book: run every chapter notebook with papermill, then ``jupyter-book build``.

    python -m vitcnn_utils.book                       # all chapters with their defaults, then the HTML book
    python -m vitcnn_utils.book -c representation_structure -f params/paper/representation_structure.yaml
    python -m vitcnn_utils.book --no-build            # execute only

Executed notebooks go to ``book/chapters/<chapter>.ipynb`` (where ``_toc.yml`` points). A chapter whose
source notebook, parameters, library code and zoo manifest are unchanged since its last successful run is
not re-executed, so a rebuild after a text edit is fast. Each notebook is executed into a temporary file and
moved into place only when papermill succeeds: an interrupted or failed run never leaves a half-written
chapter for the book, and the command stops with papermill's error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ["representation_structure", "local_global", "skip_connections", "spatial", "data_scale", "conclusion"]
READS_RESULTS = {"conclusion"}   # chapters that judge the numbers the others recorded (see vitcnn_utils.findings)
HIDDEN_TAGS = {"parameters", "injected-parameters"}


def _fingerprint(source: Path, params: dict) -> str:
    """Hash of what a chapter's output depends on (for the conclusion also the recorded results)."""
    digest = hashlib.sha256(source.read_bytes())
    if source.stem in READS_RESULTS:
        from .findings import RESULTS_DIR
        for path in sorted((ROOT / params.get("results_dir", RESULTS_DIR)).glob("*.json")):
            digest.update(path.read_bytes())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")) + [package / "zoo" / "manifest.json"]:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _up_to_date(output: Path, key: str) -> bool:
    if not output.is_file():
        return False
    return nbformat.read(output, as_version=4).metadata.get("vitcnn", {}).get("key") == key


def chapter_parameters(source: Path, params: dict) -> dict:
    """The parameters a chapter runs with: its ``parameters`` cell's defaults, overridden by ``params``."""
    nb = nbformat.read(source, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    defaults: dict = {}
    if cells:
        exec(cells[0].source, {}, defaults)          # plain assignments by convention (papermill's own rule)
    return {**defaults, **params}


def unknown_parameters(chapters: list[str], params: dict) -> list[str]:
    """Keys of ``params`` that no chapter in ``chapters`` has in its ``parameters`` cell (typos, which papermill
    would otherwise inject and the chapter silently ignore)."""
    known: set[str] = set()
    for chapter in chapters:
        known |= set(chapter_parameters(ROOT / "notebooks" / f"{chapter}.ipynb", {}))
    return sorted(set(params) - known)


def missing_zoo_models(values) -> list[str]:
    """``zoo:<name>`` models named anywhere in ``values`` (nested lists/dicts) that this installation lacks."""
    from .zoo import available

    names: list[str] = []

    def walk(v):
        if isinstance(v, str) and v.startswith("zoo:"):
            names.append(v[4:])
        elif isinstance(v, dict):
            [walk(x) for x in v.values()]
        elif isinstance(v, (list, tuple)):
            [walk(x) for x in v]
    walk(values)
    have = set(available())
    return sorted({n for n in names if n not in have})


def _placeholder(source: Path, missing: list[str]) -> nbformat.NotebookNode:
    title = next((line for c in nbformat.read(source, as_version=4).cells if c.cell_type == "markdown"
                  for line in c.source.splitlines() if line.startswith("# ")), f"# {source.stem}")
    only = " ".join(missing)
    text = (f"{title}\n\n```{{warning}}\nThis chapter was not executed in this build: it needs the zoo model(s) "
            f"{', '.join(f'`{m}`' for m in missing)}, which this installation has not trained yet. Train them with "
            f"`python -m vitcnn_utils.zoo --only {only}` (or `make zoo` for the whole zoo) and rebuild; the chapter "
            f"then runs and its findings enter the conclusion.\n```\n")
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)],
                                    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}})


def run_chapter(chapter: str, params: dict, out_dir: Path, force: bool = False) -> Path:
    """Execute ``notebooks/<chapter>.ipynb`` with ``params`` into ``out_dir/<chapter>.ipynb``.

    A chapter whose parameters name ``zoo:`` models this installation has not trained is not executed: a
    page saying which models to train takes its place, and its recorded findings are removed (the
    conclusion then reports them as not measured)."""
    import papermill

    source = ROOT / "notebooks" / f"{chapter}.ipynb"
    if not source.is_file():
        raise SystemExit(f"no chapter notebook {source}; chapters: {', '.join(CHAPTERS)}")
    output = out_dir / f"{chapter}.ipynb"
    key = _fingerprint(source, params)
    if not force and _up_to_date(output, key):
        print(f"{chapter}: up to date, not re-executed")
        return output
    out_dir.mkdir(parents=True, exist_ok=True)
    effective = chapter_parameters(source, params)
    missing = missing_zoo_models(effective)
    if missing:
        print(f"{chapter}: NOT executed: zoo model(s) {', '.join(missing)} not trained "
              f"(python -m vitcnn_utils.zoo --only {' '.join(missing)})", flush=True)
        nb = _placeholder(source, missing)
        nb.metadata["vitcnn"] = {"key": key, "parameters": params, "missing_models": missing}
        if "results_dir" in effective:
            (ROOT / effective["results_dir"] / f"{chapter}.json").unlink(missing_ok=True)
        nbformat.write(nb, output)
        return output
    tmp = out_dir / f".{chapter}.running.ipynb"
    print(f"{chapter}: executing with {params or 'its defaults'}", flush=True)
    try:
        papermill.execute_notebook(str(source), str(tmp), parameters=params, cwd=str(ROOT),
                                   kernel_name="python3", progress_bar=True, log_output=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    nb = nbformat.read(tmp, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if HIDDEN_TAGS & set(tags):                       # the reader sees results, not parameter plumbing
            cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            tmp.unlink(missing_ok=True)
            raise SystemExit(f"{chapter}: a cell produced an error output: {errors[0].get('ename')}")
    nb.metadata["vitcnn"] = {"key": key, "parameters": params}
    nbformat.write(nb, tmp)
    tmp.replace(output)
    return output


def build_html(root: Path = ROOT) -> Path:
    """``jupyter-book build`` of the book whose ``_config.yml`` and ``_toc.yml`` are in ``root``, with
    warnings as errors; returns the HTML folder."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(root), "--path-output", str(root / "book"), "-W", "-n", "--keep-going"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=root)
    return root / "book" / "_build" / "html"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--chapters", nargs="+", choices=CHAPTERS, default=CHAPTERS)
    parser.add_argument("-f", "--params", help="YAML file of parameters applied to every chosen chapter")
    parser.add_argument("-o", "--output", default=str(ROOT / "book" / "chapters"), help="executed notebooks")
    parser.add_argument("--force", action="store_true", help="re-execute chapters that are up to date")
    parser.add_argument("--no-build", action="store_true", help="execute the notebooks, skip jupyter-book")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")    # progress bars belong to the terminal (papermill's), not the book
    params = yaml.safe_load(Path(args.params).read_text()) or {} if args.params else {}
    unknown = unknown_parameters(args.chapters, params)
    if unknown:
        raise SystemExit(f"{args.params}: {', '.join(unknown)} is not a parameter of chapter(s) "
                         f"{', '.join(args.chapters)}; see each notebook's parameters cell")
    for chapter in args.chapters:
        run_chapter(chapter, params, Path(args.output), force=args.force)
    if not args.no_build:
        print(f"book: {build_html() / 'index.html'}")


if __name__ == "__main__":
    main()

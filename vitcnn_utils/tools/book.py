"""Build the book: run every chapter notebook with papermill, then ``jupyter-book build``.

    python -m vitcnn_utils.tools.book                       # all chapters with their defaults, then the HTML book
    python -m vitcnn_utils.tools.book -c representation_structure -f params/paper/representation_structure.yaml
    python -m vitcnn_utils.tools.book --no-build            # execute only
    python -m vitcnn_utils.tools.book --jobs 1              # one chapter at a time, with every core

Executed notebooks go to ``book/chapters/<chapter>.ipynb`` (where ``_toc.yml`` points). A chapter whose
source notebook, parameters, library code and zoo manifest are unchanged since its last successful run is
not re-executed, so a rebuild after a text edit is fast. Each notebook is executed into a temporary file and
moved into place only when papermill succeeds: an interrupted or failed run never leaves a half-written
chapter for the book, and the command stops with papermill's error.

While a chapter runs, the runner prints its progress: ``[i/n] chapter: cell k/m [elapsed] <first line>`` as
each code cell starts, a ``still running`` line every minute of a long cell, and the chapter's total time.
With ``--jobs N`` (default: two on a machine with two or more cores) the measuring chapters run N at a time,
each kernel with ``cores // N`` threads (``OMP_NUM_THREADS``, unless you set it), longest first; the conclusion,
which reads what they recorded, runs after them. At the end the runner prints each chapter's time and the wall
time of the whole run.

The kernel runs with CurveZMQ transport encryption where pyzmq supports it, and a finished notebook's kernel
is shut down without the interrupt (SIGINT) jupyter_client sends first by default, which ipykernel reported as
``KeyboardInterrupt caught in kernel`` when it arrived while a reply was still being sent.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import difflib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import yaml
from jupyter_client.manager import AsyncKernelManager

ROOT = Path(__file__).resolve().parents[2]  # the repository (book/, notebooks/, params/)
PACKAGE = Path(__file__).resolve().parents[1]  # vitcnn_utils/
CHAPTERS = ["representation_structure", "local_global", "skip_connections", "spatial", "data_scale", "conclusion"]
READS_RESULTS = {"conclusion"}   # chapters that judge the numbers the others recorded (see vitcnn_utils.findings)
MEASURING = [c for c in CHAPTERS if c not in READS_RESULTS]      # the chapters that run models, in book order
HIDDEN_TAGS = {"parameters", "injected-parameters"}
LONGEST_FIRST = ["data_scale", "spatial", "representation_structure", "skip_connections", "local_global"]
# (by the chapters' times in the last measured cold build, d97b1d5 in docs/benchmarks.md: 10:52, 8:37, 7:50, 5:43, 2:32)
HEARTBEAT_S = 60.0                 # a cell running longer than this prints a "still running" line this often


def _fingerprint(source: Path, params: dict) -> str:
    """Hash of what a chapter's output depends on (for the conclusion also the recorded results)."""
    digest = hashlib.sha256(source.read_bytes())
    if source.stem in READS_RESULTS:
        from ..findings import RESULTS_DIR
        for path in sorted((ROOT / params.get("results_dir", RESULTS_DIR)).glob("*.json")):
            digest.update(path.read_bytes())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    for path in library_files():
        digest.update(path.read_bytes())
    return digest.hexdigest()


def library_files() -> list[Path]:
    """The files of the ``vitcnn_utils`` package a chapter's output depends on: every module, the zoo
    manifest (the weights files are named by their checksums in it) and the recipe ablation's measurements
    (the local/global chapter shows them), where that file exists."""
    ablation = PACKAGE / "zoo" / "recipe_ablation.json"
    files = sorted(PACKAGE.rglob("*.py")) + [PACKAGE / "zoo" / "manifest.json"] + ([ablation] if ablation.is_file()
                                                                                  else [])
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"library files missing: {', '.join(map(str, missing))}")
    return files


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


def load_params(path: str | Path) -> dict:
    """The parameters of a YAML parameter file: a mapping ``name: value`` (an empty file is no parameters).
    Anything else stops with one line saying what is wrong with the file and what it should look like."""
    example = "one `name: value` line per parameter, e.g. `n_images: 100`"
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such parameter file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise SystemExit(f"{path}: not valid YAML ({problem}{where}); a parameter file has {example}") from None
    except UnicodeDecodeError:
        raise SystemExit(f"{path}: not a text file; a parameter file is YAML with {example}") from None
    if params is None:
        return {}
    if not isinstance(params, dict):
        kind = {str: "a single string", list: "a list", int: "a number", float: "a number",
                bool: "a boolean"}.get(type(params), f"a {type(params).__name__}")
        shown = repr(params) if len(repr(params)) <= 40 else repr(params)[:37] + "..."
        raise SystemExit(f"{path}: a parameter file must be a YAML mapping ({example}), but this one is "
                         f"{kind}: {shown}")
    bad = [key for key in params if not isinstance(key, str)]
    if bad:
        raise SystemExit(f"{path}: parameter names must be words, got {bad[0]!r}; a parameter file has {example}")
    return params


def unknown_parameters(chapters: list[str], params: dict) -> list[str]:
    """Keys of ``params`` that no chapter in ``chapters`` has in its ``parameters`` cell (typos, which papermill
    would otherwise inject and the chapter silently ignore)."""
    known: set[str] = set()
    for chapter in chapters:
        known |= set(chapter_parameters(ROOT / "notebooks" / f"{chapter}.ipynb", {}))
    return sorted(set(params) - known)


def _kind(value) -> str:
    """How a parameter file's value reads to its writer: "a string", "a list", "a decimal number", ..."""
    return {bool: "a boolean", int: "a whole number", float: "a decimal number", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def parameter_type_error(name: str, value, default) -> str | None:
    """Why ``value`` cannot stand in for a parameter whose default is ``default`` (``None``: it can). The
    default's type is the parameter's: a whole number takes a whole number (not ``16.0``, ``"16"`` or
    ``[16]``), a decimal number any number, a boolean ``true``/``false``, a list a list; a string or mapping
    also takes null (the chapters' "none" for an optional model or mapping); a null default takes anything."""
    if default is None:
        return None
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, want = value is None or isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, want = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, want = value is None or isinstance(value, dict), "a mapping"
    else:
        return None
    if ok:
        return None
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    what = "null" if value is None else f"{_kind(value)} ({shown})"
    return f"{name} is {what} but takes {want}: write e.g. `{name}: {json.dumps(default)}`"


def wrong_parameter_types(chapters: list[str], params: dict) -> list[str]:
    """One message per parameter of ``params`` whose value has another type than its default in the
    ``parameters`` cell of a chapter in ``chapters`` (see :func:`parameter_type_error`), naming the chapter."""
    errors, seen = [], set()
    for chapter in chapters:
        defaults = chapter_parameters(ROOT / "notebooks" / f"{chapter}.ipynb", {})
        for name in sorted(set(params) & set(defaults) - seen):
            error = parameter_type_error(name, params[name], defaults[name])
            if error:
                errors.append(f"{error} (chapter {chapter})")
                seen.add(name)
    return errors


def _zoo_names(values) -> list[str]:
    """The ``<name>`` of every ``zoo:<name>`` string anywhere in ``values`` (nested lists/dicts)."""
    names: list[str] = []

    def walk(v):
        if isinstance(v, str) and v.startswith("zoo:"):
            names.append(v[4:])
        elif isinstance(v, dict):
            [walk(x) for x in v.values()]
        elif isinstance(v, (list, tuple)):
            [walk(x) for x in v]
    walk(values)
    return names


def unknown_zoo_models(values) -> list[str]:
    """``zoo:<name>`` models named in ``values`` that the zoo does not have at all: neither in its spec
    (:data:`vitcnn_utils.zoo.SPECS`, what ``python -m vitcnn_utils.zoo --only`` trains) nor installed."""
    from ..zoo import SPECS, available

    known = set(SPECS) | set(available())
    return sorted({n for n in _zoo_names(values) if n not in known})


def unknown_zoo_message(names: list[str]) -> str:
    """One line naming the models that are not in the zoo (with the nearest zoo name) and the zoo's names."""
    from ..zoo import SPECS, available

    known = sorted(set(SPECS) | set(available()))
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"'zoo:{name}' is not a zoo model" + (f" (did you mean 'zoo:{close[0]}'?)" if close else ""))
    return f"{'; '.join(parts)}; the zoo has: {', '.join(known)}"


def missing_zoo_models(values) -> list[str]:
    """``zoo:<name>`` models of the zoo's spec named in ``values`` that this installation has not trained
    (names not in the zoo at all are :func:`unknown_zoo_models`)."""
    from ..zoo import available

    have = set(available())
    unknown = set(unknown_zoo_models(values))
    return sorted({n for n in _zoo_names(values) if n not in have and n not in unknown})


def format_elapsed(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on), whole seconds."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def cell_summary(source: str, width: int = 70) -> str:
    """The first line of a cell that is not blank, a comment or an IPython magic (``%...``), shortened to
    ``width`` characters."""
    lines = [line.strip() for line in source.splitlines()]
    line = next((x for x in lines if x and not x.startswith(("#", "%"))), lines[0] if lines else "")
    return line if len(line) <= width else line[:width - 3] + "..."


def progress_line(label: str, k: int, n: int, elapsed: float, source: str = "") -> str:
    """The line printed as code cell ``k`` of ``n`` of a chapter starts, ``elapsed`` seconds in."""
    summary = cell_summary(source)
    return f"{label}: cell {k}/{n} [{format_elapsed(elapsed)}]" + (f" {summary}" if summary else "")


class _Progress:
    """nbclient hook (``on_cell_execute``) printing :func:`progress_line` for each code cell, and a heartbeat
    thread printing a "still running" line every ``heartbeat`` seconds of a long cell."""

    def __init__(self, label: str, n_cells: int, heartbeat: float | None = HEARTBEAT_S):
        self.label, self.n, self.k, self.heartbeat = label, n_cells, 0, heartbeat
        self.start = self.cell_start = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    def __call__(self, cell, cell_index) -> None:
        self.k += 1
        self.cell_start = now = time.monotonic()
        print("  " + progress_line(self.label, self.k, self.n, now - self.start, cell.source), flush=True)

    def _beat(self) -> None:
        last = self.start
        while True:                              # a line after every `heartbeat` seconds without one
            due = max(self.cell_start, last) + self.heartbeat
            if self._stop.wait(max(due - time.monotonic(), 0.0)):
                return
            now = time.monotonic()
            if now >= max(self.cell_start, last) + self.heartbeat:     # no new cell started meanwhile
                print(f"  {self.label}: cell {self.k}/{self.n} still running [{format_elapsed(now - self.cell_start)}"
                      f" in this cell, {format_elapsed(now - self.start)} in all]", flush=True)
                last = now

    def __enter__(self) -> "_Progress":
        if self.heartbeat:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="book-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class BookKernelManager(AsyncKernelManager):
    """The kernel manager the book runs chapters with: CurveZMQ transport encryption where pyzmq has it (so
    the kernel does not warn that it runs over TCP in plain text), and no interrupt before a shutdown.

    jupyter_client sends every kernel a SIGINT before its shutdown request, to stop code that may still be
    running. A chapter's kernel is shut down after its last cell has finished, so there is nothing to stop,
    and a SIGINT that arrives while the kernel is still sending its last reply makes ipykernel log
    ``ERROR | KeyboardInterrupt caught in kernel``. The shutdown request (then SIGTERM and SIGKILL if the
    kernel does not exit in time) still applies, and interrupts outside a shutdown (a cell timeout) are sent."""

    def __init__(self, **kwargs):
        import zmq

        kwargs.setdefault("transport_encryption", "auto" if zmq.has("curve") else "disabled")
        super().__init__(**kwargs)
        self._shutting_down_finished = False

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        self._shutting_down_finished = True
        try:
            await super().shutdown_kernel(now=now, restart=restart)
        finally:
            self._shutting_down_finished = False

    async def _async_interrupt_kernel(self) -> None:
        if self._shutting_down_finished:
            return
        await super()._async_interrupt_kernel()


def execute_notebook(source: Path, output: Path, params: dict, label: str, cwd: Path = ROOT) -> None:
    """papermill ``source`` with ``params`` into ``output``, printing progress lines headed ``label``."""
    import papermill

    nb = nbformat.read(source, as_version=4)
    n_cells = sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells) + bool(params)
    start = time.monotonic()
    with _Progress(label, n_cells) as progress:
        papermill.execute_notebook(str(source), str(output), parameters=params, cwd=str(cwd),
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   kernel_manager_class=BookKernelManager, on_cell_execute=progress)
    print(f"{label}: done, {progress.k} cells in {format_elapsed(time.monotonic() - start)}", flush=True)


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


def run_chapter(chapter: str, params: dict, out_dir: Path, force: bool = False,
                step: tuple[int, int] | None = None) -> Path:
    """Execute ``notebooks/<chapter>.ipynb`` with ``params`` into ``out_dir/<chapter>.ipynb``.

    ``params`` may hold parameters of other chapters (one file for the whole book): only this chapter's are
    injected; a name that is no chapter's parameter is an error, and so is a value of another type than the
    parameter's default (checked before a kernel starts: :func:`parameter_type_error`). A ``zoo:`` name that
    is not in the zoo is an error listing the zoo's models. A chapter whose parameters name zoo models this installation has not
    trained yet is not executed: a page saying which models to train takes its place, and its recorded
    findings are removed (the conclusion then reports them as not measured). ``step`` = ``(i, n)`` heads
    the progress lines with ``[i/n]``."""
    source = ROOT / "notebooks" / f"{chapter}.ipynb"
    if not source.is_file():
        raise SystemExit(f"no chapter notebook {source}; chapters: {', '.join(CHAPTERS)}")
    label = f"[{step[0]}/{step[1]}] {chapter}" if step else chapter
    output = out_dir / f"{chapter}.ipynb"
    key = _fingerprint(source, params)
    if not force and _up_to_date(output, key):
        print(f"{label}: up to date, not re-executed")
        return output
    unknown = unknown_parameters(CHAPTERS, params)
    if unknown:
        raise SystemExit(f"{', '.join(unknown)} is not a parameter of any chapter; see each notebook's "
                         "parameters cell")
    wrong = wrong_parameter_types([chapter], params)                 # before a kernel starts
    if wrong:
        raise SystemExit(f"{chapter}: {wrong[0]}")
    defaults = chapter_parameters(source, {})
    own = {k: v for k, v in params.items() if k in defaults}     # papermill would warn about the others
    effective = {**defaults, **own}
    unknown_models = unknown_zoo_models(effective)
    if unknown_models:
        raise SystemExit(f"{chapter}: {unknown_zoo_message(unknown_models)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = missing_zoo_models(effective)
    if missing:
        print(f"{label}: NOT executed: zoo model(s) {', '.join(missing)} not trained "
              f"(python -m vitcnn_utils.zoo --only {' '.join(missing)})", flush=True)
        nb = _placeholder(source, missing)
        nb.metadata["vitcnn"] = {"key": key, "parameters": params, "missing_models": missing}
        if "results_dir" in effective:
            (ROOT / effective["results_dir"] / f"{chapter}.json").unlink(missing_ok=True)
        nbformat.write(nb, output)
        return output
    tmp = out_dir / f".{chapter}.running.ipynb"
    print(f"{label}: executing with {own or 'its defaults'}", flush=True)
    try:
        execute_notebook(source, tmp, own, label)
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


def default_jobs() -> int:
    """Chapters run at a time by default: two where there are two or more cores (one thread each on two
    cores: a chapter's operations gain only 1.4–1.7× from a second thread, docs/benchmarks.md), else one."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def run_chapters(chapters: list[str], params: dict, out_dir: Path, force: bool = False,
                 jobs: int = 1) -> dict[str, float]:
    """:func:`run_chapter` for every chapter of ``chapters``: the measuring ones ``jobs`` at a time (longest
    first, :data:`LONGEST_FIRST`), then those that read their results (:data:`READS_RESULTS`). Each kernel gets
    ``cores // jobs`` threads unless ``OMP_NUM_THREADS`` is set. The first failure stops chapters not started
    yet and is raised once the running ones finish. Returns ``{chapter: seconds}``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SystemExit(f"--jobs must be a whole number of at least 1, got {jobs!r}")
    steps = {c: (i, len(chapters)) for i, c in enumerate(chapters, 1)}
    measuring = sorted((c for c in chapters if c not in READS_RESULTS),
                       key=lambda c: LONGEST_FIRST.index(c) if c in LONGEST_FIRST else len(LONGEST_FIRST))
    seconds: dict[str, float] = {}

    def one(chapter):
        start = time.monotonic()
        run_chapter(chapter, params, out_dir, force=force, step=steps[chapter])
        seconds[chapter] = time.monotonic() - start
    if jobs > 1 and len(measuring) > 1:
        if "OMP_NUM_THREADS" not in os.environ:       # read by torch in each kernel as it starts
            os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        pool = concurrent.futures.ThreadPoolExecutor(jobs, thread_name_prefix="chapter")
        futures = [pool.submit(one, c) for c in measuring]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        for chapter in measuring:
            one(chapter)
    for chapter in chapters:
        if chapter in READS_RESULTS:
            one(chapter)
    return seconds


def build_html(root: Path = ROOT) -> Path:
    """``jupyter-book build`` of the book whose ``_config.yml`` and ``_toc.yml`` are in ``root``, with
    warnings as errors; returns the HTML folder."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(root), "--path-output", str(root / "book"), "-W", "-n", "--keep-going"]
    print(" ".join(cmd), flush=True)
    # the chapters were executed above: the _config.yml extension (vitcnn_utils.tools.sphinx_chapters) must not run them
    subprocess.run(cmd, check=True, cwd=root, env={**os.environ, "VITCNN_CHAPTERS_EXECUTED": "1"})
    return root / "book" / "_build" / "html"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--chapters", nargs="+", choices=CHAPTERS, default=CHAPTERS)
    parser.add_argument("-f", "--params", help="YAML file of parameters applied to every chosen chapter")
    parser.add_argument("-o", "--output", default=str(ROOT / "book" / "chapters"), help="executed notebooks")
    parser.add_argument("--force", action="store_true", help="re-execute chapters that are up to date")
    parser.add_argument("--no-build", action="store_true", help="execute the notebooks, skip jupyter-book")
    parser.add_argument("-j", "--jobs", type=int, default=default_jobs(),
                        help="chapters executed at a time (default: %(default)s on this machine)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")    # progress bars belong to the terminal (papermill's), not the book
    params = load_params(args.params) if args.params else {}
    unknown = unknown_parameters(args.chapters, params)
    if unknown:
        raise SystemExit(f"{args.params}: {', '.join(unknown)} is not a parameter of chapter(s) "
                         f"{', '.join(args.chapters)}; see each notebook's parameters cell")
    wrong = wrong_parameter_types(args.chapters, params)
    if wrong:
        raise SystemExit(f"{args.params}: {wrong[0]}")
    unknown_models = unknown_zoo_models(params)
    if unknown_models:
        raise SystemExit(f"{args.params}: {unknown_zoo_message(unknown_models)}")
    seconds = run_chapters(args.chapters, params, Path(args.output), force=args.force, jobs=args.jobs)
    executed = time.monotonic() - start
    if not args.no_build:
        print(f"book: {build_html() / 'index.html'}")
    print(f"chapters ({args.jobs} at a time): " + ", ".join(f"{c} {format_elapsed(seconds[c])}" for c in args.chapters)
          + f"; executing {format_elapsed(executed)}"
          + ("" if args.no_build else f", with the HTML build {format_elapsed(time.monotonic() - start)}"), flush=True)


if __name__ == "__main__":
    main()

"""A small on-disk results cache, so chapters share computations and a rebuild after a text edit is fast.

A result is stored under a key derived from everything it depends on. The chapters cache through
:func:`measured`, whose key is the call itself (:func:`call_key`: the function and every argument, models by
:func:`model_key`, a draw's images by their data fingerprint from :func:`data_fingerprint`, seed and sizes);
:func:`cached` adds :func:`code_version`, a hash of the measurement code. A change of data location, data
files, weights, parameters or library code therefore computes afresh: a cache never has to be cleared by
hand. Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch

CACHE_DIR = Path(os.environ.get("VITCNN_CACHE", ".cache/results"))
CODE_ROOT = Path(__file__).resolve().parent       # the vitcnn_utils package
CODE_EXCLUDED = ("tools", "evidence.py", "findings.py", "plotting.py")
"""What measures nothing, so its edits keep the cache: the command-line tools, the verdict engine and rules'
gathering (they read recorded numbers) and the figures. The chapters stay in: their ``run`` decides what is
computed. A test checks that no module the measurements import is excluded."""


def key_of(spec: dict) -> str:
    """A stable hash of a JSON-able description."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached(namespace: str, spec: dict, compute: Callable[[], Any], enabled: bool = True) -> Any:
    """Return the cached result for ``(namespace, spec)``, computing and storing it if absent. The key covers
    ``spec`` and :func:`code_version`."""
    if not enabled:
        return compute()
    path = CACHE_DIR / f"{namespace}-{key_of({'spec': spec, 'code': code_version()})}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(result, tmp)
    tmp.replace(path)
    return result


def measured(fn: Callable, /, *args, enabled: bool = True, unkeyed: dict | None = None, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` (plus ``unkeyed``), from the results cache when this exact call was made before.

    The key is the call itself (:func:`call_key`): ``fn``'s module and name and every argument, so a
    measurement's key cannot leave out one of its inputs; :func:`cached` adds :func:`code_version`.
    ``unkeyed``: keyword arguments that cannot change the result (a memo store), passed to ``fn`` but kept out
    of the key. ``enabled=False`` computes without reading or writing the cache."""
    spec = call_key(fn, *args, **kwargs)
    return cached(fn.__name__, spec, lambda: fn(*args, **kwargs, **(unkeyed or {})), enabled)


def call_key(fn: Callable, /, *args, **kwargs) -> dict:
    """What identifies the call ``fn(*args, **kwargs)`` in a cache key: ``fn``'s qualified name, every argument
    by :func:`argument_key` and the number of CPU threads (a float64 sum split over more threads may differ in
    its last bits)."""
    return {"call": f"{fn.__module__}.{fn.__qualname__}", "args": [argument_key(a) for a in args],
            "kwargs": {k: argument_key(v) for k, v in sorted(kwargs.items())}, "threads": torch.get_num_threads()}


def argument_key(value) -> Any:
    """What identifies one argument of a measurement: a model by :func:`model_key`; an object with a
    ``cache_key()`` method (a draw's images, :class:`vitcnn_utils.chapters.params.DrawImages`) by it; a tensor by
    dtype, shape and a hash of its values; a device or dtype by its name; numbers, strings, ``None``, and lists,
    tuples and dicts of these as themselves (a dict as its ``[key, value]`` pairs, in order: the order of a
    dict of models is the order of the result). Anything else raises ``TypeError``: a key must not guess."""
    if isinstance(value, torch.nn.Module):
        return model_key(value)
    if hasattr(value, "cache_key"):
        return value.cache_key()
    if isinstance(value, torch.Tensor):
        return {"tensor": hashlib.sha256(_tensor_bytes(value)).hexdigest(), "dtype": str(value.dtype),
                "shape": list(value.shape)}
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [argument_key(v) for v in value]
    if isinstance(value, dict):
        return [[str(k), argument_key(v)] for k, v in value.items()]
    raise TypeError(f"cannot identify an argument of type {type(value).__name__} in a cache key: pass plain values, "
                    f"models, tensors or an object with a cache_key() method (e.g. a draw's images), or pass it as "
                    f"unkeyed= if it cannot change the result")


def model_key(model: torch.nn.Module) -> dict:
    """What identifies a model as a measurement's argument: :func:`model_fingerprint` (structure, every tensor
    of its ``state_dict``, the zoo checksum) without a name, and how it reads its input (its ``vitcnn_input``
    tag or timm's ``pretrained_cfg``, which choose the preprocessing)."""
    from .data import _input_module
    inner = _input_module(model) or model
    fingerprint = model_fingerprint(model, "")
    del fingerprint["name"]
    return {**fingerprint, "input": {"vitcnn_input": getattr(inner, "vitcnn_input", None),
                                     "pretrained_cfg": getattr(inner, "pretrained_cfg", None)}}


class MemoryStore:
    """An in-process store of results, least recently used out beyond ``max_bytes`` of tensors: what
    :func:`cached` is on disk, for intermediates too large or too many to write (e.g. per-minibatch Gram
    matrices shared by several heatmaps and by a chapter's seed-twin rerun in the same process).

    The key is the full JSON text of ``spec`` and :func:`code_version` (not a hash: two specs never share an
    entry), so, as for :func:`cached`, the spec must name everything the result depends on. Values are
    returned as stored, not copied: callers must not modify them. A value larger than ``max_bytes`` is
    returned without being kept; ``max_bytes=0`` keeps nothing. ``nbytes`` counts the bytes of the tensors
    held (found in nested lists, tuples and dicts, including named tuples).
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def get(self, spec: dict, compute: Callable[[], Any]) -> Any:
        """The stored result for ``spec`` (and the current code), computing and keeping it if absent."""
        key = json.dumps({"spec": spec, "code": code_version()}, sort_keys=True, default=str)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = compute()
        size = tensor_bytes(value)
        if size <= self.max_bytes:
            self._entries[key] = (value, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                self.nbytes -= freed
        return value


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or lists, tuples and dicts of them, nested)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def code_version() -> str:
    """A hash of the code the measurements run: every module of ``vitcnn_utils`` but :data:`CODE_EXCLUDED`
    (without comments and docstrings, so a prose edit keeps the cache), and the versions of torch, timm and
    NumPy. Computed once per process."""
    return _code_version(CODE_ROOT)


@functools.lru_cache(maxsize=None)
def _code_version(root: Path) -> str:
    from importlib import metadata
    digest = hashlib.sha256(f"torch {torch.__version__}".encode())
    for package in ("timm", "numpy"):
        try:
            digest.update(f" {package} {metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            pass
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in CODE_EXCLUDED:
            continue
        source = path.read_bytes()
        try:
            code = ast.dump(_without_docstrings(ast.parse(source)), include_attributes=False).encode()
        except SyntaxError:
            code = source
        digest.update(f"\0{rel.as_posix()}\0".encode() + code)
    return digest.hexdigest()[:20]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor``'s values (on the CPU, contiguous), for hashing."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_fingerprint(model: torch.nn.Module, name: str) -> dict:
    """What identifies a model in a cache key: its name, a hash of its structure (``repr``: module classes and
    their settings, e.g. a block without skips) and of every tensor of its ``state_dict`` (names, dtypes,
    shapes, values), and the zoo checksum of a zoo model. Weights changed after loading change the key too."""
    digest = hashlib.sha256(repr(model).encode())
    for key, tensor in model.state_dict().items():
        digest.update(f"\0{key} {tensor.dtype} {tuple(tensor.shape)}\0".encode())
        digest.update(_tensor_bytes(tensor))
    out = {"name": name, "params_sha256": digest.hexdigest()}
    entry = getattr(model, "zoo_entry", None)
    if entry is not None:
        out["sha256"] = entry["sha256"]
    return out


def data_fingerprint(source: str, data_dir: str | os.PathLike | None = None) -> dict:
    """What identifies a chapter's images in a cache key. ``source="fashion-mnist"``: ``data_dir`` and the
    IDX files it resolves to (as :func:`vitcnn_utils.data.load_fashion_mnist` finds them: path, size,
    modification time and a content hash of each); an image folder: its path and a hash of the listing of
    every file under it (relative path, size, modification time)."""
    if source == "fashion-mnist":
        from . import data as vdata
        splits = {}
        for split in ("train", "test"):
            try:
                paths = vdata._locate(split, data_dir, download=False)
            except (vdata.DataNotFoundError, ValueError) as err:    # the measurement itself says what is wrong
                splits[split] = f"not found: {err}"
                continue
            splits[split] = [_file_fingerprint(Path(p)) for p in paths]
        return {"source": source, "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
                "files": splits}
    root = Path(source).resolve()
    digest, count = hashlib.sha256(), 0
    for folder, dirs, files in os.walk(root, followlinks=True):         # as torchvision's ImageFolder walks
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:                                              # a dangling link
                continue
            digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
    return {"source": str(root), "files": count, "listing_sha256": digest.hexdigest()}


_FILE_HASHES: dict[tuple, str] = {}


def _file_fingerprint(path: Path) -> dict:
    st = path.stat()
    stat = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)   # ctime: no restoring it
    if stat not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[stat] = digest.hexdigest()
    return {"path": stat[0], "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _FILE_HASHES[stat]}

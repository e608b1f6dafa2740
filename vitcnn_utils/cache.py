"""A small on-disk results cache, so chapters share computations and a rebuild after a text edit is fast.

A result is stored under a key derived from everything it depends on (a JSON-able dict: model names and
weight checksums, layers, image indices, parameters). Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

CACHE_DIR = Path(os.environ.get("VITCNN_CACHE", ".cache/results"))


def key_of(spec: dict) -> str:
    """A stable hash of a JSON-able description."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached(namespace: str, spec: dict, compute: Callable[[], Any], enabled: bool = True) -> Any:
    """Return the cached result for ``(namespace, spec)``, computing and storing it if absent."""
    if not enabled:
        return compute()
    path = CACHE_DIR / f"{namespace}-{key_of(spec)}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(result, tmp)
    tmp.replace(path)
    return result


def model_fingerprint(model: torch.nn.Module, name: str) -> dict:
    """What identifies a model's weights in a cache key: the zoo checksum, or a hash of the parameters."""
    entry = getattr(model, "zoo_entry", None)
    if entry is not None:
        return {"name": name, "sha256": entry["sha256"]}
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"name": name, "params_sha256": digest.hexdigest()}

"""vitcnn_utils.cache: a key covers every input of a result (data location and files, weights and structure,
parameters, the measurement code); unchanged inputs hit the cache."""
import copy
import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from vitcnn_utils import cache, measure
from vitcnn_utils.architectures import NoSkipBlock
from vitcnn_utils.chapters import representation_structure as rs
from vitcnn_utils.data import DEBIAN_DIR

TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def computed(monkeypatch):
    """How many times the chapter computed its heatmaps (cache misses)."""
    calls = []
    heatmaps = measure.model_heatmaps
    monkeypatch.setattr(measure, "model_heatmaps", lambda *a, **k: calls.append(1) or heatmaps(*a, **k))
    return calls


def _idx_copy(folder, transform=None):
    """Fashion-MNIST's test split as plain IDX files in ``folder``, images passed through ``transform``."""
    folder.mkdir()
    for name in TEST_FILES:
        raw = bytearray(gzip.open(DEBIAN_DIR / f"{name}.gz").read())
        if transform is not None and "images" in name:
            raw[16:] = transform(np.frombuffer(bytes(raw[16:]), np.uint8)).tobytes()
        (folder / name).write_bytes(bytes(raw))
    return folder


@pytest.fixture
def data_dirs(tmp_path):
    if not (DEBIAN_DIR / f"{TEST_FILES[0]}.gz").is_file():
        pytest.skip(f"needs Fashion-MNIST in {DEBIAN_DIR}")
    return _idx_copy(tmp_path / "a"), _idx_copy(tmp_path / "b", lambda x: 255 - x)


def _run(vit, resnet, data_dir, **kw):
    return rs.run(vit=vit, resnet=resnet, vit_twin=None, resnet_twin=None, data_dir=str(data_dir), n_images=16, batch_size=8, n_draws=1, init_seeds=(), **kw)


def test_another_data_dir_recomputes(tiny_vit, tiny_resnet, data_dirs, cache_dir, computed):
    a, b = data_dirs
    first = _run(tiny_vit, tiny_resnet, a)
    assert len(computed) == 1
    assert torch.equal(_run(tiny_vit, tiny_resnet, a).cross[0], first.cross[0]) and len(computed) == 1   # a hit
    other = _run(tiny_vit, tiny_resnet, b)
    assert len(computed) == 2
    assert torch.equal(other.cross[0], _run(tiny_vit, tiny_resnet, b, use_cache=False).cross[0])
    assert not torch.equal(other.cross[0], first.cross[0])


def test_a_touched_or_changed_data_file_recomputes(tiny_vit, tiny_resnet, data_dirs, cache_dir, computed):
    a, _ = data_dirs
    images = a / TEST_FILES[0]
    _run(tiny_vit, tiny_resnet, a)
    _run(tiny_vit, tiny_resnet, a)
    assert len(computed) == 1
    st = images.stat()
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))             # touched
    _run(tiny_vit, tiny_resnet, a)
    assert len(computed) == 2
    st = images.stat()
    raw = bytearray(images.read_bytes())
    raw[16:] = bytes(255 - b for b in raw[16:])                                # same size, same mtime
    images.write_bytes(bytes(raw))
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = _run(tiny_vit, tiny_resnet, a)
    assert len(computed) == 3
    assert torch.equal(changed.cross[0], _run(tiny_vit, tiny_resnet, a, use_cache=False).cross[0])


def test_changed_weights_recompute_also_for_a_zoo_model(tiny_vit, tiny_resnet, data_dirs, cache_dir, computed):
    a, _ = data_dirs
    vit = copy.deepcopy(tiny_vit)
    vit.zoo_entry = {"sha256": "0" * 64, "arch": "vit-cls"}          # as zoo.load labels a model
    _run(vit, tiny_resnet, a)
    _run(vit, tiny_resnet, a)
    assert len(computed) == 1
    with torch.no_grad():
        vit.blocks[0].mlp.fc1.weight.mul_(2)                           # weights changed after loading
    _run(vit, tiny_resnet, a)
    assert len(computed) == 2
    vit.blocks[1].__class__ = NoSkipBlock                              # same parameters, another network
    _run(vit, tiny_resnet, a)
    assert len(computed) == 3


def test_a_code_change_recomputes_but_a_docstring_change_does_not(tmp_path, cache_dir, monkeypatch):
    package = tmp_path / "package"
    (package / "tools").mkdir(parents=True)
    module = package / "measure.py"
    module.write_text('"""Measurements."""\n\ndef f(x):\n    return x + 1\n')
    (package / "tools" / "cli.py").write_text("print('a tool')\n")
    monkeypatch.setattr(cache, "CODE_ROOT", package)
    calls = []

    def rerun():                                    # a new process: the code version is computed afresh
        cache._code_version.cache_clear()
        return cache.cached("stand-in", {"n": 1}, lambda: calls.append(1) or len(calls))

    try:
        assert rerun() == 1 and rerun() == 1
        module.write_text('"""Measurements, described better."""\n\ndef f(x):\n    # one more\n    return x + 1\n')
        (package / "tools" / "cli.py").write_text("print('another tool')\n")
        assert rerun() == 1                          # prose and tools are not measurement code
        module.write_text('"""Measurements, described better."""\n\ndef f(x):\n    return x + 2\n')
        assert rerun() == 2 and rerun() == 2
        assert cache.cached("stand-in", {"n": 2}, lambda: calls.append(1) or len(calls)) == 3   # parameters
    finally:
        cache._code_version.cache_clear()


def test_the_code_version_covers_the_library_modules():
    files = {p.relative_to(cache.CODE_ROOT).as_posix() for p in cache.CODE_ROOT.rglob("*.py")}
    assert {"cka.py", "measure.py", "hooks.py", "data.py", "chapters/spatial.py"} <= files
    assert cache.code_version() == cache.code_version()


def test_no_module_a_measurement_runs_is_left_out_of_the_code_version():
    """The excluded modules (their edits keep the cache) are not among the modules the measurements import:
    everything :mod:`vitcnn_utils.measure` and the trainer reach, import by import, is hashed."""
    import ast
    from pathlib import Path
    root = cache.CODE_ROOT
    assert set(cache.CODE_EXCLUDED) == {"tools", "evidence.py", "findings.py", "plotting.py"}

    def imports(rel: str) -> set[str]:                # the package modules a module imports (relative imports)
        path = root / rel
        base = Path(rel).parent
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                pkg = base
                for _ in range(node.level - 1):
                    pkg = pkg.parent
                for name in ([node.module] if node.module else []) + [a.name for a in node.names if not node.module]:
                    target = pkg.joinpath(*name.split("."))
                    for cand in (target.with_suffix(".py"), target / "__init__.py"):
                        if (root / cand).is_file():
                            out.add(cand.as_posix())
                if node.module:
                    for a in node.names:
                        cand = pkg.joinpath(*node.module.split("."), a.name).with_suffix(".py")
                        if (root / cand).is_file():
                            out.add(cand.as_posix())
        return out

    seen, todo = set(), ["measure.py", "train.py"]          # (baselines draws its figure uncached)
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            todo += sorted(imports(rel))
    assert {"cka.py", "runner.py", "hooks.py", "data.py"} <= seen
    assert not seen & {"evidence.py", "findings.py", "plotting.py"}, seen
    assert not any(rel.startswith("tools/") for rel in seen)


def test_an_image_folder_listing_is_in_the_key(tmp_path, cache_dir):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "1.png").write_bytes(b"one")
    calls = []

    def run(source):
        return cache.cached("folder", {"data": cache.data_fingerprint(str(source))},
                            lambda: calls.append(1) or len(calls))

    assert run(root) == 1 and run(root) == 1
    (root / "cat" / "2.png").write_bytes(b"two")                       # another image
    assert run(root) == 2
    (root / "cat" / "2.png").write_bytes(b"TWO!")                      # a changed image
    assert run(root) == 3
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)                                       # another location
    assert run(moved) == 4 and run(root) == 3


def test_a_fashion_mnist_fingerprint_names_the_resolved_files(data_dirs):
    a, b = data_dirs
    fa, fb = cache.data_fingerprint("fashion-mnist", a), cache.data_fingerprint("fashion-mnist", b)
    assert [f["path"] for f in fa["files"]["test"]] == [str((a / n).resolve()) for n in TEST_FILES]
    assert fa["files"]["test"][0]["sha256"] != fb["files"]["test"][0]["sha256"]
    assert "not found" in fa["files"]["train"]                         # the folder has no train split


def test_chapters_cache_only_through_measured_calls():
    """A chapter never writes a cache key: every cached result is a :func:`cache.measured` call, whose key is the
    call itself; a draw's images key themselves with the data's fingerprint (tests/test_params.py)."""
    import inspect
    from vitcnn_utils.chapters import data_scale, local_global, representation_structure, skip_connections, spatial
    from vitcnn_utils.chapters import params
    assert "cache.data_fingerprint(params.data, params.data_dir)" in inspect.getsource(params.draws)
    for module in (data_scale, local_global, representation_structure, skip_connections, spatial):
        source = inspect.getsource(module)
        assert "image_draws(p)" in source and "cache.measured(" in source, module
        assert "cache.cached(" not in source and "draw.key(" not in source and "model_fingerprint" not in source


def _double(x, scale=2.0, note=None):
    _double.calls += 1
    return x * scale


def test_a_measured_call_is_its_own_key(cache_dir, tiny_vit):
    from vitcnn_utils.chapters.params import DrawImages
    _double.calls = 0
    x = torch.arange(4.0)
    assert torch.equal(cache.measured(_double, x), 2 * x) and _double.calls == 1
    assert torch.equal(cache.measured(_double, x.clone()), 2 * x) and _double.calls == 1        # same values: hit
    cache.measured(_double, x + 1)
    cache.measured(_double, x, scale=3.0)
    cache.measured(_double, x.double())                                                         # dtype is in the key
    assert _double.calls == 4
    cache.measured(_double, x, unkeyed={"note": "progress"})                                    # not in the key: hit
    assert _double.calls == 4
    cache.measured(_double, x, enabled=False)
    assert _double.calls == 5 and not list(cache_dir.glob("*.tmp"))
    images = DrawImages(lambda: pytest.fail("a cached call never loads its images"), {"seed": 0, "n": 8})
    key = cache.call_key(_double, images, {"b": tiny_vit, "a": tiny_vit}, device=torch.device("cpu"))
    assert key["args"][0] == {"seed": 0, "n": 8} and [k for k, _ in key["args"][1]] == ["b", "a"]   # order kept
    assert key["kwargs"] == {"device": "cpu"} and key["threads"] == torch.get_num_threads()
    assert key["args"][1][0][1] == cache.model_key(tiny_vit) and "name" not in cache.model_key(tiny_vit)


def test_a_model_key_covers_weights_structure_and_preprocessing(tiny_vit, monkeypatch):
    base = cache.model_key(tiny_vit)
    other = copy.deepcopy(tiny_vit)
    with torch.no_grad():
        next(other.parameters()).add_(1e-6)
    assert cache.model_key(other) != base
    monkeypatch.setattr(tiny_vit, "vitcnn_input", "imagenet", raising=False)
    assert cache.model_key(tiny_vit)["input"]["vitcnn_input"] == "imagenet" and cache.model_key(tiny_vit) != base


def test_an_argument_the_key_cannot_identify_is_an_error(cache_dir):
    with pytest.raises(TypeError, match="cannot identify an argument of type generator.*cache_key"):
        cache.measured(_double, (b for b in range(3)))
    with pytest.raises(TypeError, match="of type object"):
        cache.call_key(_double, 1.0, note=object())

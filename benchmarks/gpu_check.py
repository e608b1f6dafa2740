"""The GPU check in one command: what a one-GPU machine proves and measures about this project, in minutes.

    PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_check.json          # on a machine with a CUDA GPU
    PYTHONPATH=. python benchmarks/gpu_check.py --cpu-dry-run --out dry.json  # every step, tiny, on the CPU

It needs only torch and timm (with what they install: torchvision, numpy, PyYAML, tqdm) and this repository on
``PYTHONPATH``: no network, no weights (every model is randomly initialised, which is fine for timing and
memory), no data (it generates random uint8 images and an ImageNet-style JPEG folder in a temporary
directory). Steps, each timed and recorded, a failure in one not stopping the others:

1. ``cuda_tests``: the tests of ``tests/`` that need CUDA (``pytest -k cuda`` on the files that define them);
   skipped, with the reason, when pytest is not installed. On the GPU a skipped CUDA test is a failure.
2. ``device_parity``: all-layer heatmaps of a small ViT and ResNet on the device (float32 Grams) against the
   CPU in float64.
3. ``bench_vit_b16_resnet50``: ``benchmarks/bench_paper_models.py`` for ViT-B/16 × ResNet-50 at 224 px, bf16
   autocast with float32 Grams, batches of 256: forward-only images/s, images/s with all three heatmaps, the
   CKA overhead as a fraction of the forward time (goal ≤ 10%).
4. ``peak_vit_l16_resnet50_b1024``: the peak GPU memory of ViT-L/16 × ResNet-50 all-layer heatmaps at batch
   1,024 (same settings; goal ≤ 80 GB).
5. ``torchrun_heatmaps``: ``python -m vitcnn_utils.tools.cka_heatmaps`` under ``torchrun --standalone
   --nproc_per_node=1`` (NCCL on the GPU) on the generated folder; checks the ``.npz`` it writes.

It prints one summary and writes it as JSON to ``--out``. Exit status 0 when every step passed (the goals
are reported, not enforced), 1 otherwise. ``--cpu-dry-run`` runs the same steps at tiny size on the CPU
(tiny timm models, a few images, gloo instead of NCCL): what the test suite runs.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_OVERHEAD = 0.10            # CKA overhead as a fraction of the forward-only time
GOAL_PEAK_GB = 80.0             # ViT-L/16 x ResNet-50 at batch 1,024, in GB (1e9 bytes)

# sizes of each step: the GPU check, and the CPU dry run (same code paths, tiny)
SIZES = {
    "gpu": {"device": "cuda",
            "bench": dict(vit="vit_base_patch16_224", resnet="resnet50", images=4096, batch=256),
            "peak": dict(vit="vit_large_patch16_224", resnet="resnet50", images=2048, batch=1024),
            "torchrun": dict(vit="vit_base_patch16_224", resnet="resnet50", n_images=512, batch=256, classes=4,
                             per_class=128, image_size=224),
            "amp": "bf16", "timeout": 300},
    # timm's own test models (test_vit: a VisionTransformer, test_resnet: a ResNet, ~0.4M parameters, 160 px):
    # the same families and default layers as the paper's models, so the same code paths, in seconds
    "cpu": {"device": "cpu",
            # bf16 autocast is slow on CPUs without bf16 units: the timing step runs float32 here, the memory
            # step and the torchrun step run bf16 as on the GPU (the same measure() code either way)
            "bench": dict(vit="test_vit", resnet="test_resnet", images=8, batch=4, image_size=160, amp="none"),
            "peak": dict(vit="test_vit", resnet="test_resnet", images=4, batch=4, image_size=160),
            "torchrun": dict(vit="test_vit", resnet="test_resnet", n_images=8, batch=4, classes=2, per_class=4,
                             image_size=160),
            "amp": "bf16", "timeout": 900},                  # generous: a busy 2-core machine is slow to start
}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _run(cmd: list[str], timeout: float, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _tail(text: str, n: int = 2500) -> str:
    return text[-n:] if text else ""


# -- steps --------------------------------------------------------------------------------------------------
def step_cuda_tests(cfg: dict, dry: bool) -> dict:
    """Run the tests that need CUDA: the files of tests/ defining a test with 'cuda' in its name, ``-k cuda``."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if re.search(r"def test_\w*cuda", p.read_text()))
    if not files:
        return {"status": "fail", "detail": "no test with 'cuda' in its name found under tests/"}
    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped", "files": files,
                "detail": "pytest is not installed here: the CUDA tests were not run (device_parity still ran)"}
    cmd = [sys.executable, "-m", "pytest", *files, "-k", "cuda", "-q", "-rA", "-p", "no:cacheprovider"]
    env = _env()
    if dry:
        env.setdefault("OMP_NUM_THREADS", "1")
    done = _run(cmd, cfg["timeout"], env=env)
    out = done.stdout + done.stderr
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out)}
    passed, skipped = counts.get("passed", 0), counts.get("skipped", 0)
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    ok = done.returncode == 0 and failed == 0 and (dry or (passed > 0 and skipped == 0))
    return {"status": "pass" if ok else "fail", "files": files, "passed": passed, "skipped": skipped,
            "failed": failed, "returncode": done.returncode, "command": " ".join(cmd[1:]),
            **({} if ok else {"output": _tail(out)}),
            **({"detail": "CPU dry run: the CUDA tests are collected and skip (no GPU)"} if dry else {})}


def step_device_parity(cfg: dict, dry: bool) -> dict:
    """Heatmaps of a small ViT × ResNet on the device (float32 Grams, no autocast) against the CPU in float64."""
    import torch

    from vitcnn_utils.measure import model_heatmaps
    from vitcnn_utils.architectures import build_resnet, build_vit

    torch.manual_seed(0)
    models = {"ViT": build_vit(embed_dim=32, depth=2, num_heads=2).eval(),
              "ResNet": build_resnet(layers=(1, 1, 1, 1), channels=(8, 8, 8, 8)).eval()}
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=gen)
    batches = [(images[i:i + 16], None) for i in range(0, 32, 16)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # random-init ResNet: zero-init bn3 layers are constant (NaN)
        ref = model_heatmaps(models, batches, device="cpu", gram_dtype=torch.float64, progress=False).matrix
        got = model_heatmaps(models, batches, device=cfg["device"], gram_dtype=torch.float32, progress=False).matrix
    for m in models.values():
        m.to("cpu")
    both = torch.isfinite(ref) & torch.isfinite(got)
    err = (ref - got.cpu())[both].abs().max().item()
    # on a GPU, cuDNN convolutions may run in TF32 (PyTorch's default): features differ at ~1e-3 relative
    tol = 1e-6 if dry else 2e-3
    same_nan = bool((torch.isfinite(ref) == torch.isfinite(got.cpu())).all())
    return {"status": "pass" if err <= tol and same_nan else "fail", "max_abs_error": err, "tolerance": tol,
            "layers": int(ref.shape[0])}


def _bench(cfg: dict, which: str) -> dict:
    spec = importlib.util.spec_from_file_location("bench_paper_models", REPO / "benchmarks" / "bench_paper_models.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure(**{"amp": cfg["amp"], **cfg[which]}, device=cfg["device"], gram_dtype="float32")
    print(bench.report(result), flush=True)
    return result


def step_bench(cfg: dict, dry: bool) -> dict:
    r = _bench(cfg, "bench")
    ok = r["finite_fraction"] > 0.5 and r["n_images"] == r["images"]
    return {"status": "pass" if ok else "fail", **r, "goal_cka_overhead": GOAL_OVERHEAD,
            "goal_met": None if dry else r["cka_overhead"] <= GOAL_OVERHEAD}      # tiny CPU timings mean nothing


def step_peak(cfg: dict, dry: bool) -> dict:
    import torch
    r = _bench(cfg, "peak")
    peak_gb = r["peak_heatmaps_gib"] * 2**30 / 1e9 if r["peak_heatmaps_gib"] is not None else None
    reserved_gb = r["peak_reserved_gib"] * 2**30 / 1e9 if r["peak_reserved_gib"] is not None else None
    total_gb = (torch.cuda.get_device_properties(torch.device(cfg["device"])).total_memory / 1e9
                if cfg["device"].startswith("cuda") else None)
    ok = r["n_images"] == r["images"] and (dry or peak_gb is not None)
    return {"status": "pass" if ok else "fail", **r, "peak_heatmaps_gb": peak_gb, "peak_reserved_gb": reserved_gb,
            "device_total_gb": total_gb, "goal_peak_gb": GOAL_PEAK_GB,
            "goal_met": None if peak_gb is None else peak_gb <= GOAL_PEAK_GB}


def make_image_folder(root: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    """An ImageNet-style folder ``root/{train,val}/<class>/*.JPEG`` of random JPEGs of varied sizes and aspect
    ratios (``val`` gets ``per_class`` per class, ``train`` half as many)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("val", per_class), ("train", max(1, per_class // 2))):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = int(rng.integers(160, 400)), int(rng.integers(160, 400))
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{c}_{i:05d}.JPEG", quality=85)
    return root


def step_torchrun(cfg: dict, dry: bool, work: Path) -> dict:
    import numpy as np

    spec = cfg["torchrun"]
    data = make_image_folder(work / "imagenet", spec["classes"], spec["per_class"])
    out = work / "torchrun_heatmaps.npz"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "vitcnn_utils.tools.cka_heatmaps", "--vit", spec["vit"], "--resnet", spec["resnet"], "--data", str(data),
           "--n-images", str(spec["n_images"]), "--batch-size", str(spec["batch"]),
           "--image-size", str(spec["image_size"]), "--device", cfg["device"], "--amp", cfg["amp"],
           "--gram-dtype", "float32", "--out", str(out)]
    env = _env()
    env.setdefault("OMP_NUM_THREADS", "1" if dry else "8")
    if not dry:
        env.setdefault("NCCL_DEBUG", "WARN")
    done = _run(cmd, cfg["timeout"], env=env)
    text = done.stdout + done.stderr
    backend = re.search(r"process\(es\) \((\w+)\)", text)
    result = {"command": "torchrun " + " ".join(cmd[3:]), "returncode": done.returncode,
              "backend": backend.group(1) if backend else None,
              "summary_line": next((line for line in done.stdout.splitlines() if "process(es)" in line), None)}
    want = "gloo" if dry else "nccl"
    if done.returncode != 0 or not out.is_file():
        return {"status": "fail", **result, "output": _tail(text)}
    npz = np.load(out)
    n, nv, nr = int(npz["n_images"]), len(npz["vit_layers"]), len(npz["resnet_layers"])
    cross = npz["vit_x_resnet"]
    ok = (n == spec["n_images"] and cross.shape == (nv, nr) and npz["within_vit"].shape == (nv, nv)
          and np.isfinite(cross).mean() > 0.5 and result["backend"] == want)
    return {"status": "pass" if ok else "fail", **result, "n_images": n, "vit_layers": nv, "resnet_layers": nr,
            "finite_fraction": float(np.isfinite(cross).mean()), "expected_backend": want,
            **({} if ok else {"output": _tail(text)})}


# -- driver -------------------------------------------------------------------------------------------------
def environment(dry: bool) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "mode": "cpu-dry-run" if dry else "gpu", "repo": str(REPO)}
    missing = [m for m in ("torch", "timm", "torchvision", "numpy", "yaml", "tqdm", "PIL")
               if importlib.util.find_spec(m) is None]
    info["missing_modules"] = missing
    if "torch" not in missing:
        import torch
        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=props.total_memory / 2**30,
                        cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                        tf32_cudnn=torch.backends.cudnn.allow_tf32)
    if "timm" not in missing:
        import timm
        info["timm"] = timm.__version__
    info["pytest"] = importlib.util.find_spec("pytest") is not None
    return info


def summary_text(report: dict) -> str:
    env = report["environment"]
    where = env.get("gpu") or f"CPU ({env.get('cpu_count')} cores)"
    lines = [f"GPU check ({env['mode']}) on {where}: torch {env.get('torch')}, timm {env.get('timm')}, "
             f"CUDA {env.get('cuda')}, python {env['python']}; {report['seconds']:.0f} s in all"]
    for name, r in report["steps"].items():
        line = f"  {name:30s} {r['status']:7s} {r.get('seconds', 0):6.1f} s"
        if name == "cuda_tests":
            line += (f"  {r.get('passed', 0)} passed, {r.get('skipped', 0)} skipped, {r.get('failed', 0)} failed"
                     if "passed" in r else f"  {r.get('detail', '')}")
        elif name == "device_parity" and "max_abs_error" in r:
            line += f"  max |CKA device - CPU float64| = {r['max_abs_error']:.1e} (tolerance {r['tolerance']:.0e})"
        elif name.startswith(("bench", "peak")) and "forward_images_per_second" in r:
            line += (f"  {r['vit']} x {r['resnet']}, batch {r['batch']}: forward {r['forward_images_per_second']:.1f} "
                     f"images/s, with heatmaps {r['heatmaps_images_per_second']:.1f} images/s, CKA overhead "
                     f"{r['cka_overhead']:.0%}")
            if r.get("peak_heatmaps_gib") is not None:
                line += f", peak {r['peak_heatmaps_gib']:.1f} GiB ({r['peak_heatmaps_gib'] * 2**30 / 1e9:.1f} GB)"
            if r.get("goal_met") is not None:
                goal = (f"overhead <= {GOAL_OVERHEAD:.0%}" if name.startswith("bench")
                        else f"peak <= {GOAL_PEAK_GB:.0f} GB")
                line += f"; goal {goal}: {'met' if r['goal_met'] else 'NOT met'}"
        elif name == "torchrun_heatmaps" and "n_images" in r:
            line += f"  {r['n_images']} images, {r['vit_layers']} x {r['resnet_layers']} layers, backend {r['backend']}"
        if r["status"] == "fail" and "error" in r:
            line += f"  ERROR: {r['error'].strip().splitlines()[-1]}"
        lines.append(line)
    lines.append(f"  overall: {'PASS' if report['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="every step at tiny size on the CPU (gloo)")
    parser.add_argument("--out", help="write the summary as JSON here (e.g. $OUT/gpu_check.json)")
    parser.add_argument("--steps", help="comma-separated subset of: " + ", ".join(
        ["cuda_tests", "device_parity", "bench_vit_b16_resnet50", "peak_vit_l16_resnet50_b1024", "torchrun_heatmaps"]))
    parser.add_argument("--workdir", help="where to generate data and outputs (default: a temporary directory)")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    start = time.perf_counter()
    report = {"environment": environment(dry), "steps": {}}
    env = report["environment"]
    fatal = None
    if env["missing_modules"]:
        fatal = f"missing Python modules: {', '.join(env['missing_modules'])} (torch and timm bring the rest)"
    elif not dry and not env.get("cuda_available"):
        fatal = "no CUDA GPU is visible to torch (torch.cuda.is_available() is False); use --cpu-dry-run on a CPU"
    cfg = SIZES["cpu" if dry else "gpu"]
    if dry:
        import torch
        torch.set_num_threads(1)       # tiny work: one thread is fastest, and kind to a busy machine
    with tempfile.TemporaryDirectory(prefix="vitcnn_gpu_check_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        steps = {"cuda_tests": lambda: step_cuda_tests(cfg, dry),
                 "device_parity": lambda: step_device_parity(cfg, dry),
                 "bench_vit_b16_resnet50": lambda: step_bench(cfg, dry),
                 "peak_vit_l16_resnet50_b1024": lambda: step_peak(cfg, dry),
                 "torchrun_heatmaps": lambda: step_torchrun(cfg, dry, work)}
        chosen = args.steps.split(",") if args.steps else list(steps)
        unknown = [s for s in chosen if s not in steps]
        if unknown:
            parser.error(f"unknown steps: {', '.join(unknown)}")
        for name in chosen:
            t0 = time.perf_counter()
            if fatal:
                result = {"status": "fail", "error": fatal}
            else:
                print(f"[gpu_check] {name} ...", flush=True)
                try:
                    result = steps[name]()
                except subprocess.TimeoutExpired as err:
                    result = {"status": "fail", "error": f"timed out after {err.timeout:.0f} s: {err.cmd}"}
                except BaseException as err:                   # one failed step must not hide the others
                    if isinstance(err, KeyboardInterrupt):
                        raise
                    result = {"status": "fail", "error": traceback.format_exc()}
            result["seconds"] = time.perf_counter() - t0
            report["steps"][name] = result
            gc.collect()
            if not fatal and env.get("cuda_available"):
                import torch
                torch.cuda.empty_cache()
    report["seconds"] = time.perf_counter() - start
    report["passed"] = all(r["status"] in ("pass", "skipped") for r in report["steps"].values()) and not fatal
    text = summary_text(report)
    report["summary"] = text
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

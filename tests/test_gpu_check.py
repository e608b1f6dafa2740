"""The one-command GPU check (benchmarks/gpu_check.py, issue 16 item 3), run as its CPU dry run: every step at
tiny size (timm's test_vit / test_resnet, a few images, gloo instead of NCCL), in a fresh process with only
PYTHONPATH pointing at the repository, as on a machine without this project's environment."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ["cuda_tests", "device_parity", "bench_vit_b16_resnet50", "peak_vit_l16_resnet50_b1024", "torchrun_heatmaps"]


def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CUDA_VISIBLE"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-dry-run",
                           "--out", str(out), "--workdir", str(tmp_path / "work")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"gpu_check exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == STEPS and report["passed"] and report["environment"]["mode"] == "cpu-dry-run"
    assert report["summary"] in done.stdout and "overall: PASS" in done.stdout
    # the CUDA tests were found and collected; without a GPU they skip
    tests = steps["cuda_tests"]
    if tests["status"] != "skipped":                               # skipped only where pytest is missing
        assert tests["status"] == "pass" and tests["skipped"] >= 1 and tests["failed"] == 0
        assert "tests/test_cka.py" in tests["files"]
    assert steps["device_parity"]["status"] == "pass" and steps["device_parity"]["max_abs_error"] < 1e-6
    for name in ("bench_vit_b16_resnet50", "peak_vit_l16_resnet50_b1024"):
        r = steps[name]
        assert r["status"] == "pass" and r["n_images"] == r["images"]
        assert r["vit_layers"] == 1 + 6 * 6 and r["resnet_layers"] > 4          # test_vit: 6 blocks
        assert r["forward_images_per_second"] > 0 and r["heatmaps_images_per_second"] > 0
        assert r["cka_overhead"] == (r["heatmaps_seconds"] - r["forward_seconds"]) / r["forward_seconds"]
        assert r["peak_heatmaps_gib"] is None and r["gram_dtype"] == "float32"   # no GPU: no peak memory
    assert steps["peak_vit_l16_resnet50_b1024"]["amp"] == "bf16"
    run = steps["torchrun_heatmaps"]
    assert run["status"] == "pass" and run["backend"] == "gloo" and run["n_images"] == 8
    assert (tmp_path / "work" / "torchrun_heatmaps.npz").is_file()
    assert len(list((tmp_path / "work" / "imagenet" / "val").glob("*/*.JPEG"))) == 8

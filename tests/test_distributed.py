"""Sharded over 2 gloo processes, minibatch CKA, attention distances, skip ratios and linear probes equal
the single-process result."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vitcnn_utils.measure import attention_distances
from vitcnn_utils.cka import MinibatchCKA
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.measure import probe_layers
from vitcnn_utils.measure import vit_skip_ratios


def _data():
    """Features of 48 examples (6 minibatches of 8). ``a[2]`` is at 1e-80 and grows by 8x per minibatch, ``b[1]``
    is at 1e80: each rank then keeps its sums in other powers of two, which must be reconciled exactly."""
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(48, 5, 3, generator=gen, dtype=torch.float64) for _ in range(3)]
    a[2] = a[2] * (1e-80 * 8.0 ** torch.arange(48, dtype=torch.float64).div(8).floor()).view(-1, 1, 1)
    b = [a[0].flatten(1).tanh() @ torch.randn(15, 4, generator=gen, dtype=torch.float64),
         1e80 * torch.randn(48, 6, generator=gen, dtype=torch.float64)]
    images = torch.rand(12, 1, 28, 28, generator=gen)             # raw float images lie in [0, 1]
    return a, b, images


def _model():
    torch.manual_seed(0)
    return build_vit(embed_dim=16, depth=2, num_heads=2).eval()


def _probe_sets():
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(36) % 3
    images = (torch.rand(36, 1, 28, 28, generator=gen) * 80 + labels.view(-1, 1, 1, 1) * 50).to(torch.uint8)
    return [[(images[sl], labels[sl]) for sl in _batches(12, 4, start)] for start in (0, 12, 24)]


def _probe(sets):
    result = probe_layers(_model(), ["blocks.0", "blocks.1"], *sets, num_classes=3, progress=False)
    return result.accuracy, result.relative_lambda, (result.n_fit, result.n_val, result.n_test)


def _batches(n, size, start=0):
    if start:
        return [slice(i, i + size) for i in range(start, start + n, size)]
    return [slice(i, i + size) for i in range(0, n, size)]


def _worker(rank, world, store, out):
    """One gloo rank. Rank 0 writes its results to the file ``out`` (plain pickled CPU tensors, read by the
    parent after both ranks have exited), so nothing depends on a process staying alive to share memory."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    a, b, images = _data()
    cka = MinibatchCKA()
    for sl in _batches(48, 8)[rank::world]:                 # each rank takes every world-th minibatch
        cka.update([x[sl] for x in a], [y[sl] for y in b])
    result = cka.compute()                                   # all-reduced sums
    shards = [(images[sl], None) for sl in _batches(12, 3)[rank::world]]
    dist_result, count = attention_distances(_model(), shards)
    ratios, _ = vit_skip_ratios(_model(), shards)
    probes = _probe([batches[rank::world] for batches in _probe_sets()])
    if rank == 0:
        partial = f"{out}.partial"
        torch.save((result, cka.num_examples, dist_result, count, ratios, probes), partial)
        os.replace(partial, out)                             # the parent never sees a half-written file
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path):
    a, b, images = _data()
    single = MinibatchCKA()
    for sl in _batches(48, 8):
        single.update([x[sl] for x in a], [y[sl] for y in b])
    expected_dist, _ = attention_distances(_model(), [(images[sl], None) for sl in _batches(12, 3)])
    expected_ratios, _ = vit_skip_ratios(_model(), [(images[sl], None) for sl in _batches(12, 3)])
    expected_probes = _probe(_probe_sets())

    # Results come back through a file, not a torch.multiprocessing queue: a queue shares tensor storage by
    # file descriptor, which the parent can no longer rebuild once rank 0 has exited (FileNotFoundError in
    # resource_sharer on a loaded machine). The rendezvous is a file store too: no port to race for.
    out = tmp_path / "rank0.pt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(rank, 2, str(tmp_path / "store"), str(out))) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)                                  # generous: both cores may be busy
    for p in procs:
        if p.is_alive():
            p.terminate()
    assert [p.exitcode for p in procs] == [0, 0], "a gloo worker failed or hung (see its traceback above)"
    result, local_examples, dist_result, count, ratios, probes = torch.load(out, weights_only=False)
    assert local_examples == 24 and count == 12              # rank 0 saw half, the result covers all
    assert (result - single.compute()).abs().max().item() < 1e-12
    assert (dist_result - expected_dist).abs().max().item() < 1e-10
    assert (ratios - expected_ratios).abs().max().item() < 1e-10
    assert probes[2] == expected_probes[2] == (12, 12, 12)
    for agg, acc in expected_probes[0].items():
        assert torch.equal(probes[0][agg], acc), agg                 # same λ choices, same test counts
        assert torch.equal(probes[1][agg], expected_probes[1][agg]), agg


def test_torchrun_heatmaps_equal_one_process(tmp_path):
    """``torchrun --nproc_per_node=2 -m vitcnn_utils.tools.cka_heatmaps`` (gloo, sharded minibatches, all-reduced sums)
    writes the same heatmaps as one process on the same images and minibatches."""
    import subprocess
    import sys

    import numpy as np

    args = ["--vit", "arch:vit-cls", "--resnet", "arch:resnet", "--n-images", "40", "--batch-size", "8",
            "--device", "cpu"]                                   # 5 minibatches: ranks get 3 and 2
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    def run(cmd):                                    # results go through files; show the stderr if it fails
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-4000:]}"

    # --standalone: torchrun picks a free rendezvous port itself (no port chosen here and then raced for)
    run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "vitcnn_utils.tools.cka_heatmaps", *args,
         "--out", str(tmp_path / "two.npz")])
    # the reference runs in a process with the same thread count: float32 forward passes differ at ~1e-7
    # between thread counts (reduction order), which would show as ~1e-9 in the CKA
    run([sys.executable, "-m", "vitcnn_utils.tools.cka_heatmaps", *args, "--out", str(tmp_path / "one.npz")])
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert int(two["n_images"]) == int(one["n_images"]) == 40
    assert list(two["vit_layers"]) == list(one["vit_layers"]) and len(one["resnet_layers"]) > 10
    for key in ("within_vit", "within_resnet", "vit_x_resnet"):
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-12)
    assert np.allclose(np.diag(one["within_vit"]), 1.0)


def test_analysis_batches_shard_every_world_th_minibatch():
    import pytest

    from vitcnn_utils.data import analysis_batches

    full = analysis_batches("fashion-mnist", 40, 8)
    shards = [analysis_batches("fashion-mnist", 40, 8, shard=(r, 2)) for r in (0, 1)]
    assert [len(s) for s in shards] == [3, 2]
    assert all(torch.equal(x[0], y[0]) for x, y in zip(full[0::2], shards[0]))
    assert all(torch.equal(x[0], y[0]) for x, y in zip(full[1::2], shards[1]))
    with pytest.raises(ValueError, match="5 minibatches cannot be shared by 6"):
        analysis_batches("fashion-mnist", 40, 8, shard=(0, 6))


"""Sharded over 2 gloo processes, minibatch CKA, attention distances and skip ratios equal the
single-process result."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vitcnn_utils.attention import model_attention_distances
from vitcnn_utils.cka import MinibatchCKA
from vitcnn_utils.models import build_vit
from vitcnn_utils.skips import vit_skip_ratios


def _data():
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(48, 5, 3, generator=gen) for _ in range(3)]
    b = [a[0].flatten(1).tanh() @ torch.randn(15, 4, generator=gen), torch.randn(48, 6, generator=gen)]
    images = torch.randn(12, 1, 28, 28, generator=gen)
    return a, b, images


def _model():
    torch.manual_seed(0)
    return build_vit(embed_dim=16, depth=2, num_heads=2).eval()


def _batches(n, size):
    return [slice(i, i + size) for i in range(0, n, size)]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    a, b, images = _data()
    cka = MinibatchCKA()
    for sl in _batches(48, 8)[rank::world]:                 # each rank takes every world-th minibatch
        cka.update([x[sl] for x in a], [y[sl] for y in b])
    result = cka.compute()                                   # all-reduced sums
    shards = [(images[sl], None) for sl in _batches(12, 3)[rank::world]]
    dist_result, count = model_attention_distances(_model(), shards)
    ratios, _ = vit_skip_ratios(_model(), shards)
    if rank == 0:
        out.put((result, cka.num_examples, dist_result, count, ratios))
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process():
    a, b, images = _data()
    single = MinibatchCKA()
    for sl in _batches(48, 8):
        single.update([x[sl] for x in a], [y[sl] for y in b])
    expected_dist, _ = model_attention_distances(_model(), [(images[sl], None) for sl in _batches(12, 3)])
    expected_ratios, _ = vit_skip_ratios(_model(), [(images[sl], None) for sl in _batches(12, 3)])

    with socket.socket() as s:                               # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, 2, port, out)) for rank in range(2)]
    for p in procs:
        p.start()
    result, local_examples, dist_result, count, ratios = out.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert local_examples == 24 and count == 12              # rank 0 saw half, the result covers all
    assert (result - single.compute()).abs().max().item() < 1e-12
    assert (dist_result - expected_dist).abs().max().item() < 1e-10
    assert (ratios - expected_ratios).abs().max().item() < 1e-10

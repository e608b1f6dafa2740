"""Sums across ``torch.distributed`` ranks: every accumulator in this package is a plain sum, so sharding the
minibatches across processes and all-reducing the sums gives the single-process result."""
from __future__ import annotations

import torch


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sums of ``tensors`` over all ranks of the default process group, in one collective call
    (every rank must call it with tensors of the same shapes); the tensors themselves, unchanged, when no
    group of more than one process is initialised."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return tensors
    dtype = torch.promote_types(torch.float64, tensors[0].dtype)
    flat = torch.cat([t.detach().to(dtype).flatten() for t in tensors])
    dist.all_reduce(flat)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out

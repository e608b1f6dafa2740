"""Mean attention distance against closed forms and a brute-force loop."""
import itertools
import math

import pytest
import torch

from vitcnn_utils.attention import mean_attention_distance, patch_distances
from vitcnn_utils.measure import attention_distances


def brute_force(attn, patch_size, gh, gw, prefix, renormalize):
    """Python loops over images, heads, queries and keys."""
    b, h = attn.shape[:2]
    out = torch.zeros(h, dtype=torch.float64)
    cells = list(itertools.product(range(gh), range(gw)))
    for img in range(b):
        for head in range(h):
            total = 0.0
            for qi, (qr, qc) in enumerate(cells):
                row = [attn[img, head, prefix + qi, prefix + ki].item() for ki in range(len(cells))]
                mass = sum(row) if renormalize else 1.0
                total += sum(w / mass * patch_size * math.hypot(qr - kr, qc - kc)
                             for w, (kr, kc) in zip(row, cells))
            out[head] += total / len(cells) / b
    return out


def test_identity_attention_is_zero():
    attn = torch.eye(1 + 16).expand(2, 3, 17, 17)
    assert torch.equal(mean_attention_distance(attn, 4, 4), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 5, 9])
def test_uniform_attention_on_a_line_has_closed_form(n):
    # grid 1×n: mean |i - j| over all ordered pairs = (n² - 1) / (3n)
    attn = torch.full((1, 2, n, n), 1.0 / n)
    got = mean_attention_distance(attn, patch_size=16, grid=(1, n), num_prefix_tokens=0)
    assert torch.allclose(got, torch.full((2,), 16 * (n * n - 1) / (3 * n), dtype=torch.float64), atol=1e-12)


def test_uniform_attention_2x2_grid_hand_computed():
    # each query sees itself (0), two neighbours (1 patch) and the diagonal (√2 patches)
    attn = torch.full((3, 1, 4, 4), 0.25)
    got = mean_attention_distance(attn, patch_size=4, grid=2, num_prefix_tokens=0)
    assert got.item() == pytest.approx(4 * (2 + math.sqrt(2)) / 4, abs=1e-12)


def test_cls_handling_hand_computed():
    # 1 CLS + 1×2 grid. Patch query 0 puts 0.5 on CLS, 0.25 on itself, 0.25 on its neighbour (8 px away);
    # patch query 1 puts everything on patch 0.
    attn = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0]]]])
    renorm = mean_attention_distance(attn, 8, (1, 2), num_prefix_tokens=1, renormalize=True).item()
    raw = mean_attention_distance(attn, 8, (1, 2), num_prefix_tokens=1, renormalize=False).item()
    assert renorm == pytest.approx((0.5 * 8 + 8) / 2)      # 0.25/0.5 of query 0's patch attention is 8 px away
    assert raw == pytest.approx((0.25 * 8 + 8) / 2)        # the CLS share counts as distance 0


@pytest.mark.parametrize("renormalize", [True, False])
def test_random_attention_matches_brute_force(renormalize):
    gen = torch.Generator().manual_seed(0)
    attn = torch.randn(2, 3, 1 + 12, 1 + 12, generator=gen).mul(3).softmax(-1)
    got = mean_attention_distance(attn, 4, (3, 4), num_prefix_tokens=1, renormalize=renormalize)
    assert torch.allclose(got, brute_force(attn, 4, 3, 4, 1, renormalize), atol=1e-10)


def test_patch_distances_geometry():
    d = patch_distances((2, 3), 10)
    assert d.shape == (6, 6) and d[0, 5].item() == pytest.approx(10 * math.hypot(1, 2))


def test_errors():
    with pytest.raises(ValueError, match="tokens"):
        mean_attention_distance(torch.full((1, 1, 10, 10), 0.1), 4, 3, num_prefix_tokens=0)
    with pytest.raises(ValueError, match="sum.* to 1"):
        mean_attention_distance(torch.randn(1, 1, 5, 5), 4, 2, num_prefix_tokens=1)
    with pytest.raises(ValueError, match="B, heads, N, N"):
        mean_attention_distance(torch.full((4, 4), 0.25), 4, 2, num_prefix_tokens=0)


def test_model_distances_average_over_batches(tiny_vit):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(10, 1, 28, 28, generator=gen)                  # raw float images lie in [0, 1]
    dist, n = attention_distances(tiny_vit, [(x[:7], None), (x[7:], None)])
    one, _ = attention_distances(tiny_vit, [(x, None)])
    assert n == 10 and dist.shape == (2, 4)
    assert torch.allclose(dist, one, atol=1e-10)
    max_distance = 4 * math.hypot(6, 6)
    assert (dist > 0).all() and (dist < max_distance).all()


def test_rank_correlation_and_uniform_distance(tiny_vit):
    from vitcnn_utils.attention import rank_correlation
    from vitcnn_utils.measure import uniform_distance
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(x, x ** 3) == pytest.approx(1.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)
    uniform = torch.full((1, 1, 50, 50), 1 / 50)
    assert uniform_distance(tiny_vit) == pytest.approx(
        mean_attention_distance(uniform, 4, 7, num_prefix_tokens=1).item(), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("where", ["float32 softmax, stored", "softmax in the dtype"])
def test_half_precision_probabilities_are_accepted(dtype, where):
    """Attention captured under bf16/fp16 autocast: rows sum to 1 only within the dtype's rounding (2.6e-3 for
    bf16 here, over 1 + 14×14 tokens), which is no reason to reject them (before: "pass softmax outputs, not
    logits"). The distance is that of the values given, computed in float64."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 1 + 14 * 14, 1 + 14 * 14, generator=gen) * 3
    attn = logits.softmax(-1).to(dtype) if where.startswith("float32") else logits.to(dtype).softmax(-1)
    for renormalize in (True, False):
        got = mean_attention_distance(attn, 16, 14, num_prefix_tokens=1, renormalize=renormalize)
        # the same values in float64, through the loop: the only difference is the row-sum check
        a = attn.double()[:, :, 1:, 1:]
        a = a / a.sum(-1, keepdim=True) if renormalize else a
        expected = (a * patch_distances(14, 16)).sum(-1).mean((0, 2))
        assert torch.allclose(got, expected, atol=1e-10, rtol=0)


def test_rejected_rows_name_their_dtype():
    logits = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match=r"up to 0.016 for torch.bfloat16 rows.*not logits"):
        mean_attention_distance(logits.bfloat16(), 4, 2, num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"up to 0.001 for torch.float32 rows"):
        mean_attention_distance(logits.softmax(-1) * 1.01, 4, 2, num_prefix_tokens=1)
    negative = torch.full((1, 1, 5, 5), 0.2)
    negative[0, 0, 0, :2] = torch.tensor([-0.1, 0.5])
    with pytest.raises(ValueError, match="smallest value is -1.00e-01"):
        mean_attention_distance(negative, 4, 2, num_prefix_tokens=1)


def test_geometry_and_empty_inputs_are_refused():
    """A negative prefix count, a non-positive patch size and an empty batch used to return 52.32 px, 0 px,
    positive distances and an error from max()."""
    uniform = torch.full((1, 1, 50, 50), 1 / 50)
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be .*\(>= 0\).*got -1"):
        mean_attention_distance(torch.full((1, 1, 48, 48), 1 / 48), 4, 7, num_prefix_tokens=-1)
    for bad in (0, -4, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"patch_size must be .* positive number, got {bad}"):
            mean_attention_distance(uniform, bad, 7, num_prefix_tokens=1)
        with pytest.raises(ValueError, match="patch_size must be"):
            patch_distances(7, bad)
    with pytest.raises(ValueError, match=r"no images \(B = 0\)"):
        mean_attention_distance(torch.zeros(0, 2, 50, 50), 4, 7)
    with pytest.raises(ValueError, match="has no heads"):
        mean_attention_distance(torch.zeros(3, 0, 50, 50), 4, 7)
    assert mean_attention_distance(uniform, 4, 7).item() > 0                     # valid input still works

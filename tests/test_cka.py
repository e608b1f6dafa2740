"""CKA against an independent float64 NumPy reference (Song et al. 2012's unbiased HSIC, written out)."""
import math
import warnings

import numpy as np
import pytest
import torch

from vitcnn_utils.cka import MinibatchCKA, linear_cka, split_heatmap, u_centre_
from vitcnn_utils.measure import model_heatmaps


# ---- reference: the formulas, in float64 NumPy, no shared code with the package --------------------------
def hsic_unbiased_ref(K, L):
    """HSIC_1 = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)), K~ = K, zero diagonal."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def hsic_biased_ref(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def gram(x):
    """Linear Gram matrix of (n, ...) features, after subtracting the FIRST example from all of them: HSIC is
    exactly invariant to a shared offset (test_offset_invariance_is_exact), and without it the explicit
    formula cancels terms of ~n^3 K^2 in float64 when the features carry a large common offset."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x[:1]
    return x @ x.T


def minibatch_cka_ref(xs, ys, splits):
    """Nguyen et al. eq. 3: sums of per-batch unbiased HSIC, combined once."""
    xy = xx = yy = 0.0
    start = 0
    for size in splits:
        K, L = gram(xs[start:start + size]), gram(ys[start:start + size])
        xy, xx, yy = xy + hsic_unbiased_ref(K, L), xx + hsic_unbiased_ref(K, K), yy + hsic_unbiased_ref(L, L)
        start += size
    return xy / math.sqrt(xx * yy)


def structured(n, seed, tokens=9, dim=6, pos_scale=3.0):
    """Token representations: per-example content + a positional component shared by every example,
    and a second representation that is a noisy non-linear function of the first."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, tokens, dim))
    position = pos_scale * rng.normal(size=(1, tokens, dim))
    x = content + position
    w = rng.normal(size=(dim, 2 * dim))
    y = np.tanh(x @ w) + 0.3 * rng.normal(size=(n, tokens, 2 * dim))
    return x, y


# ---- one pair, one batch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e3])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_unbiased_matches_reference_at_extreme_scales(scale, offset):
    x, y = structured(64, seed=0)
    x, y = scale * x + offset, scale * y - offset
    ref = hsic_unbiased_ref(gram(x), gram(y)) / math.sqrt(hsic_unbiased_ref(gram(x), gram(x))
                                                          * hsic_unbiased_ref(gram(y), gram(y)))
    got = linear_cka(torch.from_numpy(x), torch.from_numpy(y), unbiased=True)
    assert 0.2 < ref < 0.99  # a non-trivial value
    assert abs(got - ref) <= 1e-6


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e3])
def test_biased_matches_reference(scale):
    x, y = structured(50, seed=1)
    x, y = scale * x, y / scale
    ref = hsic_biased_ref(gram(x), gram(y)) / math.sqrt(hsic_biased_ref(gram(x), gram(x))
                                                        * hsic_biased_ref(gram(y), gram(y)))
    assert abs(linear_cka(torch.from_numpy(x), torch.from_numpy(y)) - ref) <= 1e-6


def test_float32_inputs_with_offset_match_float64_reference():
    x, y = structured(128, seed=2)
    x32, y32 = torch.from_numpy(x + 500.0).float(), torch.from_numpy(y * 1e3).float()
    xr, yr = x32.double().numpy(), y32.double().numpy()   # the reference sees exactly the same values
    ref = minibatch_cka_ref(xr, yr, [128])
    assert abs(linear_cka(x32, y32, unbiased=True) - ref) <= 1e-6


def test_offset_invariance_is_exact():
    """In exact rational arithmetic, Song's HSIC_1 of shifted features equals that of the originals."""
    from fractions import Fraction
    rng = np.random.default_rng(12)
    x = [[Fraction(int(v)) for v in row] for row in rng.integers(-9, 9, size=(7, 3))]
    y = [[Fraction(int(v)) for v in row] for row in rng.integers(-9, 9, size=(7, 2))]
    shift_x, shift_y = [Fraction(1001, 3), Fraction(-7, 2), Fraction(50)], [Fraction(13), Fraction(-1, 7)]

    def hsic(a, b):
        n = len(a)
        K = [[sum(p * q for p, q in zip(a[i], a[j])) if i != j else 0 for j in range(n)] for i in range(n)]
        L = [[sum(p * q for p, q in zip(b[i], b[j])) if i != j else 0 for j in range(n)] for i in range(n)]
        KL = [[sum(K[i][k] * L[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
        return (sum(KL[i][i] for i in range(n)) + sum(map(sum, K)) * sum(map(sum, L)) / ((n - 1) * (n - 2))
                - Fraction(2, n - 2) * sum(map(sum, KL))) / (n * (n - 3))

    shifted_x = [[v + s for v, s in zip(row, shift_x)] for row in x]
    shifted_y = [[v + s for v, s in zip(row, shift_y)] for row in y]
    assert hsic(shifted_x, shifted_y) == hsic(x, y) and hsic(x, y) != 0


def test_u_centring_equals_song_formula():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(12, 5)), rng.normal(size=(12, 7))
    K, L = gram(a), gram(b)
    stack = u_centre_(torch.from_numpy(np.stack([K, L])))
    n = 12
    assert abs((stack[0] * stack[1]).sum().item() / (n * (n - 3)) - hsic_unbiased_ref(K, L)) < 1e-12


# ---- invariances and anchors --------------------------------------------------------------------------------
def test_orthogonal_and_isotropic_scaling_invariance():
    x, y = structured(80, seed=5)
    x, y = torch.from_numpy(x.reshape(80, -1)), torch.from_numpy(y.reshape(80, -1))
    q, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    for unbiased in (False, True):
        base = linear_cka(x, y, unbiased)
        assert abs(linear_cka(x @ q, y, unbiased) - base) < 1e-10
        assert abs(linear_cka(37.5 * x, 1e-4 * y, unbiased) - base) < 1e-10


def test_self_similarity_is_one():
    x = torch.randn(40, 3, 5, generator=torch.Generator().manual_seed(6))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x, unbiased=True) == pytest.approx(1.0, abs=1e-12)


def test_unbiased_cka_of_independent_features_is_near_zero_and_can_be_negative():
    values, biased = [], []
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(200, 100, generator=gen), torch.randn(200, 100, generator=gen)
        values.append(linear_cka(x, y, unbiased=True))
        biased.append(linear_cka(x, y))
    assert max(abs(v) for v in values) < 0.02
    assert min(values) < 0                      # never clamped to [0, 1]
    assert min(biased) > 0.3                    # the biased estimator is far from 0 at d/n = 0.5


# ---- minibatch accumulation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("splits", [[96], [48, 48], [24, 24, 24, 24], [40, 31, 25]])
def test_minibatch_equals_reference_for_batch_splits(splits):
    x, y = structured(96, seed=7)
    z = np.sin(x) * 1e3                          # a third layer, on another scale
    cka = MinibatchCKA()
    start = 0
    for size in splits:                          # the last split of [40, 31, 25] is ragged
        sl = slice(start, start + size)
        cka.update({"x": torch.from_numpy(x[sl]), "z": torch.from_numpy(z[sl])}, [torch.from_numpy(y[sl])])
        start += size
    got = cka.compute()
    assert got.dtype == torch.float64 and got.shape == (2, 1)
    assert abs(got[0, 0].item() - minibatch_cka_ref(x, y, splits)) <= 1e-6
    assert abs(got[1, 0].item() - minibatch_cka_ref(z, y, splits)) <= 1e-6
    assert cka.num_examples == 96 and cka.num_batches == len(splits)


def test_minibatch_is_not_a_mean_of_per_batch_cka():
    x, y = structured(64, seed=8)
    y[:16] *= 50.0                               # one batch with a much larger HSIC
    splits = [16, 16, 16, 16]
    per_batch = np.mean([minibatch_cka_ref(x[i:i + 16], y[i:i + 16], [16]) for i in range(0, 64, 16)])
    cka = MinibatchCKA()
    for i in range(0, 64, 16):
        cka.update([torch.from_numpy(x[i:i + 16])], [torch.from_numpy(y[i:i + 16])])
    got = cka.compute().item()
    assert abs(got - minibatch_cka_ref(x, y, splits)) <= 1e-6
    assert abs(got - per_batch) > 1e-3


def test_all_pairs_within_and_across_from_one_update():
    rng = np.random.default_rng(9)
    a = [rng.normal(size=(32, 4, 3)) for _ in range(3)]
    b = [np.tanh(a[0].reshape(32, -1) @ rng.normal(size=(12, 8))), rng.normal(size=(32, 5))]
    splits = [12, 10, 10]
    bounds = np.cumsum([0] + splits)

    def batches(arrs):
        return [[torch.from_numpy(v[s:e]) for v in arrs] for s, e in zip(bounds[:-1], bounds[1:])]

    joint, cross = MinibatchCKA(), MinibatchCKA()
    for feats_ab, feats_a, feats_b in zip(batches(a + b), batches(a), batches(b)):
        joint.update(feats_ab)
        cross.update(feats_a, feats_b)
    aa, bb, ab = split_heatmap(joint.compute(), 3)
    for i in range(3):
        for j in range(3):
            assert abs(aa[i, j].item() - minibatch_cka_ref(a[i], a[j], splits)) <= 1e-6
        for j in range(2):
            assert abs(ab[i, j].item() - minibatch_cka_ref(a[i], b[j], splits)) <= 1e-6
    assert torch.allclose(aa, aa.T) and torch.allclose(aa.diagonal(), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(cross.compute(), ab, atol=1e-12)
    assert abs(bb[0, 1].item() - minibatch_cka_ref(b[0], b[1], splits)) <= 1e-6


def test_float32_grams_close_to_float64():
    x, y = structured(256, seed=10)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    c64, c32 = MinibatchCKA(), MinibatchCKA(gram_dtype=torch.float32)
    for i in range(0, 256, 64):
        c64.update([xt[i:i + 64]], [yt[i:i + 64]])
        c32.update([xt[i:i + 64]], [yt[i:i + 64]])
    assert abs(c64.compute().item() - c32.compute().item()) < 1e-6


def test_float32_grams_within_1e6_of_reference_with_large_offset_and_scale():
    """float32 centring and Gram products, float64 U-centring: a 1e3 offset and a 1e-3 scale cost no accuracy."""
    x, y = structured(256, seed=12)
    xt, yt = torch.from_numpy(1e-3 * x + 1e3).float(), torch.from_numpy(y).float()
    cka = MinibatchCKA(gram_dtype=torch.float32)
    for i in range(0, 256, 64):
        cka.update([xt[i:i + 64]], [yt[i:i + 64]])
    x64 = xt.double().numpy()
    x64 = x64 - x64[:1]                  # exact in float64 for float32 inputs; CKA is offset-invariant
    expected = minibatch_cka_ref(x64, yt.double().numpy(), [64] * 4)
    assert abs(cka.compute().item() - expected) <= 1e-6


# ---- errors ---------------------------------------------------------------------------------------------------
def test_reused_gram_buffer_changes_nothing_and_leaves_inputs_alone():
    """update() writes each minibatch's Grams into a buffer kept between minibatches: the sums must equal
    those of a fresh buffer every time, bit for bit (within and across, ragged last batch included), and the
    caller's Grams, passed in again to a second object as the data-scale chapter does, must be left as they were."""
    torch.manual_seed(3)
    sizes = [16, 16, 9]
    xs = [[torch.randn(n, 5) * s, torch.randn(n, 3, 2)] for n, s in zip(sizes, (1.0, 1e3, 1e-3))]
    ys = [[torch.randn(n, 4), torch.randn(n, 7) + 5] for n in sizes]
    for within in (True, False):
        reused, fresh, from_grams = MinibatchCKA(), MinibatchCKA(), MinibatchCKA()
        for x, y in zip(xs, ys):
            reused.update(x, None if within else y)
            fresh._buffers.clear()
            fresh.update(x, None if within else y)
            gx, gy = [from_grams.gram(t) for t in x], [from_grams.gram(t) for t in y]
            before = [g.matrix.clone() for g in gx + gy]
            from_grams.update(gx, None if within else gy)
            assert all(torch.equal(g.matrix, b) for g, b in zip(gx + gy, before))
        assert reused._buffers["a"].shape[1] == sizes[-1]          # the ragged batch got its own buffer
        a, b, c = reused.sums(), fresh.sums(), from_grams.sums()
        for key in a:
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key


def test_errors_are_clear():
    cka = MinibatchCKA()
    with pytest.raises(ValueError, match="before any update"):
        cka.compute()
    with pytest.raises(ValueError, match="at least 4"):
        cka.update([torch.randn(3, 5)])
    with pytest.raises(ValueError, match="'b1' has 7 examples"):
        cka.update({"b0": torch.randn(8, 5), "b1": torch.randn(7, 5)})
    with pytest.raises(ValueError, match="model A's minibatch has 8 examples, model B's 6"):
        cka.update([torch.randn(8, 5)], [torch.randn(6, 5)])
    bad = torch.randn(8, 5)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*'blocks.2'"):
        MinibatchCKA().update({"blocks.1": torch.randn(8, 5), "blocks.2": bad})
    bad[2, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        MinibatchCKA().update([bad], [torch.randn(8, 4)])
    with pytest.raises(ValueError, match="differ from those of the first update"):
        c = MinibatchCKA()
        c.update([torch.randn(8, 5)])
        c.update([torch.randn(8, 5), torch.randn(8, 5)])


def test_constant_layer_is_nan_with_warning_never_zero():
    x = torch.randn(16, 6, dtype=torch.float64)
    const = torch.full((16, 4), 0.1, dtype=torch.float64) * 3.7   # values with rounding in their mean
    cka = MinibatchCKA()
    cka.update({"x": x, "dead": const})
    cka.update({"x": x, "dead": const})
    with pytest.warns(UserWarning, match="'dead' are constant over all 32 examples"):
        out = cka.compute()
    assert out[0, 0].item() == pytest.approx(1.0) and torch.isnan(out[1]).all() and torch.isnan(out[:, 1]).all()
    with pytest.warns(UserWarning, match="constant"):
        assert math.isnan(linear_cka(x, const))
    # constant in one batch only: that batch adds exactly 0 to HSIC(x,y) and HSIC(y,y), but HSIC(x,x) to the
    # x-denominator. With h = HSIC(x,x) per batch and y = 2x in batch 2: CKA = 2h / sqrt(2h * 4h) = 1/sqrt(2)
    cka = MinibatchCKA()
    cka.update([x], [const])
    cka.update([x], [x * 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cka.compute().item() == pytest.approx(1 / math.sqrt(2), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("gram_dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_cuda_matches_cpu(gram_dtype, tol):
    x, y = structured(512, seed=11)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    cpu, gpu = MinibatchCKA(), MinibatchCKA(gram_dtype=gram_dtype)
    for i in range(0, 512, 128):
        cpu.update([xt[i:i + 128], yt[i:i + 128]])
        gpu.update([xt[i:i + 128].cuda(), yt[i:i + 128].cuda()])
    assert (cpu.compute() - gpu.compute()).abs().max().item() < tol


def test_gram_inside_autocast_keeps_its_precision():
    """Hooks run inside the forward pass's autocast region: the Gram product must not drop to bfloat16."""
    x, _ = structured(64, seed=13)
    xt = torch.from_numpy(x).float()
    plain = MinibatchCKA(gram_dtype=torch.float32).gram(xt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = MinibatchCKA(gram_dtype=torch.float32).gram(xt)
    assert inside.matrix.dtype == torch.float64 and torch.equal(inside.matrix, plain.matrix)


def test_model_heatmaps_from_grams_in_hooks_equal_features_path():
    """model_heatmaps reduces each layer to its Gram inside the hook; same numbers as updating from features."""
    from vitcnn_utils.hooks import Capture
    from vitcnn_utils.architectures import build_vit
    from vitcnn_utils.data import preprocessor

    torch.manual_seed(0)
    model = build_vit(embed_dim=16, depth=2, num_heads=2).eval()
    images = (torch.rand(24, 1, 28, 28) * 255).to(torch.uint8)
    batches = [(images[i:i + 8], None) for i in range(0, 24, 8)]
    heatmaps = model_heatmaps({"m": model}, batches, progress=False)
    reference = MinibatchCKA()
    with Capture(model) as cap, torch.inference_mode():
        for x, _ in batches:
            reference.update(cap(preprocessor(model)(x)))
    assert heatmaps.n_images == 24
    assert torch.allclose(heatmaps["m", "m"], reference.compute(), atol=1e-12, rtol=0)



# ---- precision: offsets, extreme scales (issue 12) -----------------------------------------------------------
def _run(feats_x, feats_y, gram_dtype, batch=64):
    """Minibatch CKA of two (n, ...) tensors in batches of ``batch``, warnings raised as errors."""
    cka = MinibatchCKA(gram_dtype=gram_dtype)
    for i in range(0, len(feats_x), batch):
        cka.update({"x": feats_x[i:i + batch]}, {"y": feats_y[i:i + batch]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cka.compute().item()


@pytest.mark.parametrize("gram_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("input_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("offset,scale", [(1e3, 1.0), (1e6, 1.0), (1e7, 1.0), (1e6, 1e-8)])
def test_common_offset_costs_no_accuracy_in_any_input_precision(offset, scale, input_dtype, gram_dtype):
    """Centring happens in the input's precision before the cast to ``gram_dtype``: float64 features with a 1e7
    offset, or a 1e-8 spread on a 1e6 offset, keep their CKA within 1e-6 of the float64 reference with
    float32 Grams (before: errors of 6.5e-4 at 1e6, 4.8e-2 at 1e7, and NaN with a false "constant" warning)."""
    if input_dtype == torch.float32 and scale < 1e-7 * offset:
        pytest.skip("float32 cannot hold a 1e-8 spread on a 1e6 offset: the features themselves are constant")
    x, y = structured(256, seed=14)
    xt = torch.from_numpy(scale * x + offset).to(input_dtype)
    yt = torch.from_numpy(scale * y - offset).to(input_dtype)
    # the reference sees exactly the values passed; gram() subtracts the first example, exact here (Sterbenz)
    expected = minibatch_cka_ref(xt.double().numpy(), yt.double().numpy(), [64] * 4)
    assert 0.2 < expected < 0.99
    assert abs(_run(xt, yt, gram_dtype) - expected) <= 1e-6


@pytest.mark.parametrize("gram_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("input_dtype,scale", [(torch.float64, 1e-80), (torch.float64, 1e80),
                                               (torch.float64, 1e-300), (torch.float64, 1e306),
                                               (torch.float32, 1e-25), (torch.float32, 1e25)])
def test_extreme_feature_scales_give_the_unscaled_cka(input_dtype, scale, gram_dtype):
    """CKA is scale invariant: features at 1e-80 / 1e80 (float64) or 1e±25 (float32) give the CKA of the unscaled
    features, where HSIC alone would under/overflow (before: an all-NaN heatmap, no warning). At 1e306 even the
    sum of a minibatch's features overflows float64."""
    x, y = structured(256, seed=15)
    expected = minibatch_cka_ref(x, y, [64] * 4)
    xt, yt = torch.from_numpy(scale * x).to(input_dtype), torch.from_numpy(scale * y).to(input_dtype)
    tol = 1e-10 if gram_dtype == torch.float64 and input_dtype == torch.float64 else 1e-6
    assert abs(_run(xt, yt, gram_dtype) - expected) <= tol
    # the two layers at opposite extremes, in one within-model heatmap of three layers
    cka = MinibatchCKA(gram_dtype=gram_dtype)
    tiny, huge = (torch.from_numpy(s * x).to(input_dtype) for s in (scale, 1 / scale))
    for i in range(0, 256, 64):
        cka.update({"tiny": tiny[i:i + 64], "huge": huge[i:i + 64], "y": torch.from_numpy(y[i:i + 64])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heat = cka.compute()
    assert abs(heat[0, 2].item() - expected) <= tol and abs(heat[1, 2].item() - expected) <= tol
    assert abs(heat[0, 1].item() - 1.0) <= tol


@pytest.mark.parametrize("gram_dtype", [torch.float32, torch.float64])
def test_minibatches_of_different_scales_keep_their_weights(gram_dtype):
    """The per-layer rescaling is one power of two for all minibatches of a layer, so a minibatch 1e3 times
    larger still dominates the sums as it should (Nguyen et al. eq. 3), also at a 1e-80 overall scale."""
    x, y = structured(256, seed=16)
    weights = np.repeat([1.0, 1e3, 1.0, 30.0], 64)[:, None, None]
    expected = minibatch_cka_ref(x * weights, y, [64] * 4)
    equal_weights = np.mean([minibatch_cka_ref(x[i:i + 64], y[i:i + 64], [64]) for i in range(0, 256, 64)])
    assert abs(expected - equal_weights) > 1e-3          # the weighting matters for this data
    for overall in (1.0, 1e-80, 1e80):
        got = _run(torch.from_numpy(overall * weights * x), torch.from_numpy(y), gram_dtype)
        assert abs(got - expected) <= (1e-10 if gram_dtype == torch.float64 else 1e-6)


def test_gram_of_hook_path_is_scaled_exactly():
    """MinibatchCKA.gram returns the Gram matrix in units of 4**exponent: matrix * 4**exponent is the Gram of the
    centred features, and updating from Grams equals updating from the features, bit for bit."""
    x, y = structured(64, seed=17)
    xt, yt = torch.from_numpy(x * 1e-30), torch.from_numpy(y * 1e40)
    cka = MinibatchCKA()
    g = cka.gram(xt)
    centred = xt.reshape(64, -1) - xt.reshape(64, -1).mean(0)
    true_gram = centred @ centred.T
    assert (g.matrix * 4.0 ** g.exponent.item() - true_gram).abs().max() <= 1e-13 * true_gram.abs().max()
    assert 0.25 <= g.matrix.diagonal().max().item() <= 4 * centred.shape[1]
    from_grams, from_feats = MinibatchCKA(), MinibatchCKA()
    from_grams.update([cka.gram(xt), cka.gram(yt)])
    from_feats.update([xt, yt])
    assert torch.equal(from_grams.compute(), from_feats.compute())


def test_varying_layer_with_vanishing_hsic_warns():
    """4 examples, 3 of them equal: the layer varies, yet its U-centred Gram matrix is exactly 0. Its CKA is
    undefined; the warning says so instead of returning a bare NaN."""
    outlier = torch.tensor([[1.0], [1.0], [1.0], [-3.0]], dtype=torch.float64)
    cka = MinibatchCKA()
    cka.update({"outlier": outlier, "y": torch.randn(4, 3, dtype=torch.float64)})
    with pytest.warns(UserWarning, match="'outlier' .* vary over the examples, but their HSIC"):
        out = cka.compute()
    assert torch.isnan(out[0]).all() and out[1, 1].item() == pytest.approx(1.0)


def test_update_errors_name_the_layer_and_the_fix():
    with pytest.raises(ValueError, match="layer 'loss' is a 0-d tensor.*reshape"):
        MinibatchCKA().update({"loss": torch.tensor(1.0), "x": torch.randn(8, 3)})
    with pytest.raises(ValueError, match=r"layer 'a\[1\]' is a 0-d tensor"):
        MinibatchCKA().update([torch.randn(8, 3), torch.tensor(1.0)])
    with pytest.raises(TypeError, match="layer 'x' is a numpy.ndarray.*torch.from_numpy"):
        MinibatchCKA().update({"x": np.zeros((8, 3))})
    with pytest.raises(TypeError, match=r"layer 'b\[0\]' is a numpy.ndarray"):
        MinibatchCKA().update([torch.randn(8, 3)], [np.zeros((8, 3))])
    with pytest.raises(TypeError, match="not a single Tensor"):
        MinibatchCKA().update(torch.randn(8, 3))
    with pytest.raises(TypeError, match="0-d tensor"):
        MinibatchCKA().gram(torch.tensor(2.0))
    c = MinibatchCKA()
    c.update({"x": torch.randn(8, 3), "y": torch.randn(8, 3)})
    with pytest.raises(ValueError, match=r"same layers in another order \(now \['y', 'x'\], first \['x', 'y'\]\)"):
        c.update({"y": torch.randn(8, 3), "x": torch.randn(8, 3)})
    with pytest.raises(ValueError, match=r"new \['z'\], missing \['y'\]"):
        c.update({"x": torch.randn(8, 3), "z": torch.randn(8, 3)})
    with pytest.raises(ValueError, match=r"first update was within one model \(feats_b=None\), this one is not"):
        c.update({"x": torch.randn(8, 3), "y": torch.randn(8, 3)}, {"w": torch.randn(8, 3)})
    c.update({"x": torch.randn(8, 3), "y": torch.randn(8, 3)})   # the refused updates changed nothing
    assert c.num_batches == 2


# ---- issue 21: impossible arguments refused, errors that say what was wrong -------------------------------------
def test_heatmap_helpers_refuse_impossible_arguments_and_never_invent_values():
    from vitcnn_utils.cka import band_mean, best_match, nanmax
    square = torch.rand(5, 5, dtype=torch.float64)
    for bad in (7, 5, 0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"num_a must be an int in \[1, 4\]"):
            split_heatmap(square, bad)
    with pytest.raises(ValueError, match=r"square .* got \(5, 4\)"):
        split_heatmap(torch.rand(5, 4), 2)
    assert [tuple(b.shape) for b in split_heatmap(square, 2)] == [(2, 2), (3, 3), (2, 3)]

    nan = float("nan")
    m = torch.tensor([[0.1, nan, 0.5], [0.9, nan, nan], [0.3, nan, 0.2]], dtype=torch.float64)
    assert best_match(m).tolist() == [1, -1, 0]          # an all-NaN column (a constant layer) matches nothing
    assert math.isnan(nanmax(torch.full((3, 2), nan)))   # was -inf
    assert nanmax(m) == 0.9
    along = nanmax(m, 0)
    assert along[0].item() == 0.9 and math.isnan(along[1].item()) and along[2].item() == 0.5

    for rows in ((0.75, 0.25), (1.5, 2), (-0.1, 0.5), (0.5, 0.5), (0.25,), "ab"):
        with pytest.raises(ValueError, match="rows must be .start, end. fractions"):
            band_mean(square, rows, (0, 1))
    with pytest.raises(ValueError, match="cols must be"):
        band_mean(square, (0, 1), (0.5, 0.2))
    assert band_mean(square, (0, 1), (0, 1)) == pytest.approx(square.mean().item())


def test_cka_errors_that_misled_now_say_what_was_wrong():
    with pytest.raises(ValueError, match=r"layer 'x' has no features \(shape \(8, 0\)\)"):
        MinibatchCKA().update({"x": torch.randn(8, 0)})
    with pytest.raises(ValueError, match="'y' has no features"):
        linear_cka(torch.randn(8, 3), torch.randn(8, 0))
    assert MinibatchCKA(gram_dtype="float32").gram_dtype is torch.float32
    assert MinibatchCKA(gram_dtype="float64").gram_dtype is torch.float64
    with pytest.raises(ValueError, match=r"gram_dtype must be torch.float64 or torch.float32 \(or the strings "
                                         r"'float64', 'float32'\), got 'half'"):
        MinibatchCKA(gram_dtype="half")
    with pytest.raises(ValueError, match="gram_dtype must be"):
        MinibatchCKA(gram_dtype=torch.float16)
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="device='mps' is not available on this machine"):
            MinibatchCKA(device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is not available on this machine"):
            MinibatchCKA(device="cuda")
    with pytest.raises(ValueError, match="device='meta' holds no data"):
        MinibatchCKA(device="meta")
    assert MinibatchCKA(device="cpu").device == torch.device("cpu")
    with pytest.raises(TypeError, match="layer 'a.0.' is torch.complex64: CKA takes real features"):
        MinibatchCKA().update([torch.randn(8, 3, dtype=torch.complex64)])
    with pytest.raises(TypeError, match="complex"):
        MinibatchCKA().gram(torch.randn(8, 3, dtype=torch.complex128))
    for unbiased in (False, True):
        with pytest.raises(TypeError, match="layer 'x' is a numpy.ndarray.*torch.from_numpy"):
            linear_cka(np.zeros((8, 3)), np.zeros((8, 3)), unbiased=unbiased)
        with pytest.raises(ValueError, match="layer 'x' is a 0-d tensor"):
            linear_cka(torch.tensor(1.0), torch.tensor(2.0), unbiased=unbiased)
        with pytest.raises(TypeError, match="complex"):
            linear_cka(torch.randn(8, 3), torch.randn(8, 3, dtype=torch.complex64), unbiased=unbiased)

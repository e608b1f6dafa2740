"""Linear probes against a float64 NumPy reference built from the normal equations, brute-force held-out
selection and brute-force test accuracy."""
import numpy as np
import pytest
import torch

from vitcnn_utils.hooks import block_outputs
from vitcnn_utils.measure import probe_layers
from vitcnn_utils.probes import RELATIVE_LAMBDAS, RidgeProbes, aggregate, ridge_solutions, signed_one_hot


def _structured(n, d, classes, seed, noise=1.0, offset=0.0, scale=1.0):
    """Class means on a random low-rank subspace plus anisotropic noise: a probe problem with structure."""
    shared = np.random.default_rng(1234)                            # the same classes in every split
    means = shared.normal(size=(classes, 3)) @ shared.normal(size=(3, d))
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = means[y] + noise * rng.normal(size=(n, d)) * np.linspace(0.1, 2.0, d)
    return scale * x + offset, y


def _reference(x_fit, y_fit, x_val, y_val, x_test, y_test, classes, rel_lambdas):
    """Ridge by the augmented normal equations, λ by brute-force held-out MSE, accuracy by brute force."""
    def onehot(y):
        return 2.0 * np.eye(classes)[y] - 1.0
    xa = np.hstack([x_fit, np.ones((len(x_fit), 1))])
    centred = x_fit - x_fit.mean(0)
    scale = np.trace(centred.T @ centred) / x_fit.shape[1]
    penalty = np.eye(xa.shape[1])
    penalty[-1, -1] = 0.0                                          # bias unpenalised
    best = None
    for r in rel_lambdas:
        w = np.linalg.solve(xa.T @ xa + r * scale * penalty, xa.T @ onehot(y_fit))
        pred_val = np.hstack([x_val, np.ones((len(x_val), 1))]) @ w
        mse = ((pred_val - onehot(y_val)) ** 2).sum() / len(x_val)
        if best is None or mse < best[0]:
            best = (mse, r, w)
    _, r, w = best
    acc = (np.argmax(np.hstack([x_test, np.ones((len(x_test), 1))]) @ w, 1) == y_test).mean()
    return w, r, acc


def test_signed_one_hot():
    y = signed_one_hot(torch.tensor([0, 2]), 3)
    assert y.tolist() == [[1, -1, -1], [-1, -1, 1]]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        signed_one_hot(torch.tensor([3]), 3)


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (1e-3, 0.0), (1e3, 0.0), (1.0, 50.0)])
def test_ridge_solutions_match_normal_equations(scale, offset):
    x, y = _structured(60, 7, 4, seed=0, scale=scale, offset=offset)
    xa = np.hstack([x, np.ones((60, 1))])
    targets = 2.0 * np.eye(4)[y] - 1.0
    xx = torch.from_numpy(xa.T @ xa)[None]
    xy = torch.from_numpy(xa.T @ targets)[None]
    rel = torch.tensor([1e-4, 1e-1, 10.0], dtype=torch.float64)
    got = ridge_solutions(xx, xy, rel)                              # (L, 1, d+1, C)
    centred = x - x.mean(0)
    tr = np.trace(centred.T @ centred) / 7
    penalty = np.eye(8)
    penalty[-1, -1] = 0
    for i, r in enumerate(rel.tolist()):
        ref = np.linalg.solve(xa.T @ xa + r * tr * penalty, xa.T @ targets)
        pred_ref, pred = xa @ ref, xa @ got[i, 0].numpy()          # compare predictions: scale-free
        assert np.abs(pred - pred_ref).max() < 1e-6, (scale, offset, r)


def test_probes_match_reference_and_batching():
    classes = 5
    x_fit, y_fit = _structured(40, 12, classes, seed=1)
    x_val, y_val = _structured(50, 12, classes, seed=2)
    x_test, y_test = _structured(70, 12, classes, seed=3)
    w_ref, r_ref, acc_ref = _reference(x_fit, y_fit, x_val, y_val, x_test, y_test, classes, RELATIVE_LAMBDAS)
    assert 0.3 < acc_ref < 1.0                                       # a non-trivial problem

    def run(batch):
        probes = RidgeProbes(classes)
        for split, x, y in (("fit", x_fit, y_fit), ("val", x_val, y_val)):
            for i in range(0, len(x), batch):
                probes.update(split, {"s": torch.from_numpy(x[i:i + batch, None])}, torch.from_numpy(y[i:i + batch]))
        probes.solve()
        for i in range(0, len(x_test), batch):
            probes.score({"s": torch.from_numpy(x_test[i:i + batch, None])}, torch.from_numpy(y_test[i:i + batch]))
        return probes
    for batch in (7, 16, 1000):                                     # ragged, even, one batch
        probes = run(batch)
        assert probes.chosen["s"].item() == r_ref
        assert np.abs(probes.weights["s"][0].numpy() - w_ref).max() < 1e-8
        assert probes.accuracy()["s"].item() == pytest.approx(acc_ref, abs=1e-12)


def test_few_shot_probes_of_wide_features_match_reference():
    """Fewer images than features (few-shot probes of wide layers): the images are kept as rows, not as
    (d+1)² sums, and the probes solved from the n × n Gram matrix give the normal equations' solution."""
    classes, d = 3, 40
    x_fit, y_fit = _structured(9, d, classes, seed=5)
    x_val, y_val = _structured(12, d, classes, seed=6)
    x_test, y_test = _structured(30, d, classes, seed=7)
    w_ref, r_ref, acc_ref = _reference(x_fit, y_fit, x_val, y_val, x_test, y_test, classes, RELATIVE_LAMBDAS)
    probes = RidgeProbes(classes)
    for split, x, y in (("fit", x_fit, y_fit), ("val", x_val, y_val)):
        for i in range(0, len(x), 4):
            probes.update(split, {"s": torch.from_numpy(x[i:i + 4, None])}, torch.from_numpy(y[i:i + 4]))
    assert probes.moments["fit"]["s"].rows is not None and probes.moments["val"]["s"].rows is not None
    probes.solve()
    probes.score({"s": torch.from_numpy(x_test[:, None])}, torch.from_numpy(y_test))
    assert probes.chosen["s"].item() == r_ref
    assert np.abs(probes.weights["s"][0].numpy() - w_ref).max() < 1e-6 * np.abs(w_ref).max()
    assert probes.accuracy()["s"].item() == pytest.approx(acc_ref, abs=1e-12)


def test_per_token_probes_are_independent():
    """P probes in one site equal P separate sites (each picks its own λ)."""
    classes = 3
    xs = [_structured(90, 6, classes, seed=s, noise=0.5 + s) for s in range(3)]
    y = torch.from_numpy(xs[0][1])
    stacked = torch.stack([torch.from_numpy(x) for x, _ in xs], 1)     # (B, 3, 6)
    joint, separate = RidgeProbes(classes), RidgeProbes(classes)
    for probes, feats in ((joint, lambda sl: {"t": stacked[sl]}),
                          (separate, lambda sl: {f"t{p}": stacked[sl, p:p + 1] for p in range(3)})):
        probes.update("fit", feats(slice(0, 30)), y[:30])
        probes.update("val", feats(slice(30, 60)), y[30:60])
        probes.solve()
        probes.score(feats(slice(60, 90)), y[60:90])
    acc_joint, acc_sep = joint.accuracy()["t"], separate.accuracy()
    for p in range(3):
        assert acc_joint[p].item() == acc_sep[f"t{p}"].item()
        assert joint.chosen["t"][p].item() == separate.chosen[f"t{p}"].item()


def test_separable_classes_are_probed_perfectly():
    x, y = _structured(300, 10, 4, seed=4, noise=1e-3)
    probes = RidgeProbes(4)
    probes.update("fit", {"s": torch.from_numpy(x[:100, None])}, torch.from_numpy(y[:100]))
    probes.update("val", {"s": torch.from_numpy(x[100:200, None])}, torch.from_numpy(y[100:200]))
    probes.solve()
    probes.score({"s": torch.from_numpy(x[200:, None])}, torch.from_numpy(y[200:]))
    assert probes.accuracy()["s"].item() == 1.0


def test_probe_errors_are_explicit():
    probes = RidgeProbes(3)
    with pytest.raises(ValueError, match="split must be"):
        probes.update("train", {"s": torch.zeros(4, 1, 2)}, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="feature rows"):
        probes.update("fit", {"s": torch.zeros(4, 1, 2)}, torch.zeros(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="held-out"):
        probes.update("fit", {"s": torch.randn(4, 1, 2)}, torch.zeros(4, dtype=torch.long))
        probes.solve()
    with pytest.raises(RuntimeError, match="solve"):
        RidgeProbes(3).score({"s": torch.zeros(4, 1, 2)}, torch.zeros(4, dtype=torch.long))


def test_aggregate_tokens_and_maps():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    out = aggregate(tokens, num_prefix_tokens=1)
    assert torch.equal(out["first"], tokens[:, :1])
    assert torch.allclose(out["gap"], tokens.mean(1, keepdim=True))
    assert torch.allclose(out["gap_spatial"], tokens[:, 1:].mean(1, keepdim=True))
    assert torch.equal(out["tokens"], tokens)
    fmap = torch.randn(2, 4, 14, 14)
    out = aggregate(fmap, 0, grid=(7, 7), aggregations=("gap", "tokens"))
    assert out["tokens"].shape == (2, 49, 4)
    assert torch.allclose(out["tokens"][:, 0], fmap[:, :, :2, :2].mean((-1, -2)), atol=1e-6)   # 2×2 pooling
    assert torch.allclose(out["gap"][:, 0], fmap.mean((-1, -2)), atol=1e-6)
    with pytest.raises(ValueError, match="'first'"):
        aggregate(fmap, 0, aggregations=("first",))
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(tokens, 1, aggregations=("cls",))


def _image_batches(n, seed, batch=10):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = (torch.rand(n, 1, 28, 28, generator=gen) * 60 + labels.view(-1, 1, 1, 1) * 60).to(torch.uint8)
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_resnet"])
def test_probe_layers_on_models(fixture, request):
    """End to end on a model: shapes, and the per-token site of layer l equals probing those tokens directly."""
    model = request.getfixturevalue(fixture)
    layers = block_outputs(model)
    result = probe_layers(model, layers, _image_batches(30, 0), _image_batches(30, 1), _image_batches(40, 2),
                          num_classes=3, progress=False)
    assert (result.n_fit, result.n_val, result.n_test) == (30, 30, 40)
    tokens = result.accuracy["tokens"]
    expected_tokens = 50 if fixture == "tiny_vit" else 49             # ResNet maps pooled to the 7×7 grid
    assert tokens.shape == (len(layers), expected_tokens)
    assert ("first" in result.accuracy) == (fixture == "tiny_vit")
    assert result.accuracy["gap"].shape == (len(layers), 1)
    # class brightness is linearly decodable from the embedding: the mean-token probe must find it
    assert result.accuracy["gap"][0].item() > 0.9
    assert ((tokens >= 0) & (tokens <= 1)).all()


# ---- issue 21: errors that say what was wrong; no NaN accuracy under torch.distributed ---------------------------
def _solved(classes=3, n=30, d=4):
    x, y = _structured(2 * n, d, classes, seed=7)
    probes = RidgeProbes(classes)
    probes.update("fit", {"s": torch.from_numpy(x[:n, None])}, torch.from_numpy(y[:n]))
    probes.update("val", {"s": torch.from_numpy(x[n:, None])}, torch.from_numpy(y[n:]))
    probes.solve()
    return probes, x, y


def test_probe_errors_say_what_was_wrong():
    x = torch.randn(6, 1, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for bad in (float("nan"), float("inf")):
        x_bad = x.clone()
        x_bad[2, 0, 1] = bad
        with pytest.raises(ValueError, match="site 's': the features contain NaN or inf"):
            RidgeProbes(3).update("fit", {"s": x_bad}, labels)
    with pytest.raises(TypeError, match=r"labels must be integer class indices, got torch.float32 .*labels.long"):
        RidgeProbes(3).update("fit", {"s": x}, labels.float())
    RidgeProbes(3).update("fit", {"s": x}, labels.to(torch.uint8))      # any integer dtype is a label
    with pytest.raises(ValueError, match="num_classes must be at least 2, got 1.*fit set holds a single class"):
        RidgeProbes(1)
    probes, xs, ys = _solved(classes=2)
    with pytest.raises(ValueError, match=r"labels range over \[0, 2\], but the probes are for 2 classes.*a class is "
                                         "missing from the fit set"):
        probes.score({"s": x}, labels)


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of one process: torch.distributed is initialised, as under torchrun."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_accuracy_under_distributed_refuses_what_it_refuses_on_one_process(one_process_group):
    with pytest.raises(RuntimeError, match=r"call solve\(\) \(and score\(\)\) before accuracy"):
        RidgeProbes(3).accuracy()                    # was an IndexError
    probes, x, y = _solved()
    with pytest.raises(RuntimeError, match="no test batches were scored"):
        probes.accuracy()                            # was NaN
    probes.score({"s": torch.from_numpy(x[:10, None])}, torch.from_numpy(y[:10]))
    assert 0 <= probes.accuracy()["s"].item() <= 1


def test_accuracy_without_a_process_group_refuses_too():
    with pytest.raises(RuntimeError, match="call solve"):
        RidgeProbes(3).accuracy()
    probes, _, _ = _solved()
    with pytest.raises(RuntimeError, match="no test batches were scored"):
        probes.accuracy()

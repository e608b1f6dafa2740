"""Helpers of the data-scale chapter: matched-layer CKA against a float64 NumPy reference of unbiased
minibatch CKA on captured features, block layers, depth bookkeeping and training summaries."""
import copy
import math

import numpy as np
import pytest
import torch

from vitcnn_utils.chapters.data_scale import matched_layer_cka
from vitcnn_utils.cka import Heatmaps
from vitcnn_utils.measure import model_heatmaps
from vitcnn_utils.hooks import block_layers, capture, middle_index, normalised_depth
from vitcnn_utils.measure import block_probes
from vitcnn_utils.zoo import training_summary

from test_cka import hsic_unbiased_ref as _hsic1  # the one float64 reference of the formula


def _minibatch_cka_ref(xs, ys):
    """Nguyen et al. eq. 3 over a list of per-batch (n, ...) arrays: sums of HSIC_1, combined once."""
    xy = xx = yy = 0.0
    for x, y in zip(xs, ys):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        y = np.asarray(y, np.float64).reshape(len(y), -1)
        K, L = x @ x.T, y @ y.T
        xy, xx, yy = xy + _hsic1(K, L), xx + _hsic1(K, K), yy + _hsic1(L, L)
    return xy / math.sqrt(xx * yy)


def _perturbed(model, scale, seed):
    """A copy of ``model`` whose parameters carry Gaussian noise growing with depth (later layers drift more)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = [p for p in other.parameters() if p.ndim > 1]
        for i, p in enumerate(params):
            p.add_(scale * (1 + i) / len(params) * p.std() * torch.randn(p.shape, generator=gen))
    return other


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_resnet"])
def test_matched_layer_cka_equals_reference_on_captured_features(fixture, request):
    model = request.getfixturevalue(fixture)
    models = {"100%": model, "small": _perturbed(model, 0.8, 1), "tiny": _perturbed(model, 3.0, 2)}
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8), torch.zeros(n))
               for n in (9, 7)]
    layers = block_layers(model)
    heat = model_heatmaps(models, batches, {k: layers for k in models}, progress=False)
    matched = matched_layer_cka(heat, "100%")
    assert list(matched) == ["small", "tiny"]
    from vitcnn_utils.data import normalize
    feats = {k: [capture(m, normalize(x), layers) for x, _ in batches] for k, m in models.items()}
    for label, values in matched.items():
        assert values.dtype == torch.float64 and values.shape == (len(layers),)
        for i, layer in enumerate(layers):
            ref = _minibatch_cka_ref([f[layer] for f in feats[label]], [f[layer] for f in feats["100%"]])
            assert abs(values[i].item() - ref) <= 1e-6, (label, layer)
    # the same model against itself is 1 everywhere; heavier perturbation lowers the final block's CKA
    assert torch.allclose(heat["100%", "100%"].diagonal(), torch.ones(len(layers), dtype=torch.float64))
    assert matched["tiny"][-1] < matched["small"][-1] < 1.0


def test_matched_layer_cka_from_a_known_matrix_and_errors():
    names = {"a": ["x", "y"], "b": ["x", "y"], "c": ["x", "y", "z"]}
    matrix = torch.arange(49, dtype=torch.float64).reshape(7, 7)
    heat = Heatmaps({k: names[k] for k in ("a", "b")}, matrix[:4, :4], 10)
    out = matched_layer_cka(heat, "b")
    assert list(out) == ["a"] and out["a"].tolist() == [2.0, 10.0]      # rows of a (0, 1), columns of b (2, 3)
    with pytest.raises(ValueError, match="no model 'q'"):
        matched_layer_cka(heat, "q")
    with pytest.raises(ValueError, match="same architecture"):
        matched_layer_cka(Heatmaps(names, matrix, 10), "a")


def test_block_layers(tiny_vit, tiny_resnet):
    assert block_layers(tiny_vit) == ["norm_pre", "blocks.0", "blocks.1"]
    assert block_layers(tiny_vit, with_input=False) == ["blocks.0", "blocks.1"]
    assert block_layers(tiny_resnet) == ["maxpool", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]


def test_depth_bookkeeping():
    assert normalised_depth(1).tolist() == [0.0]
    assert normalised_depth(6).tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-15)
    for n in range(1, 40):
        depth = normalised_depth(n).numpy()
        dist = np.abs(depth - 0.5)
        nearest = np.flatnonzero(np.isclose(dist, dist.min(), rtol=0, atol=1e-12))
        assert middle_index(n) == nearest.min()                     # nearest 0.5, ties to the lower layer
    assert [middle_index(n) for n in (1, 2, 6, 7, 12, 16)] == [0, 0, 2, 3, 5, 7]
    with pytest.raises(ValueError):
        middle_index(0)


def test_training_summary(tiny_vit):
    trained = torch.nn.Linear(2, 2)
    trained.zoo_entry = {"fraction": 0.03, "train_images": 1800, "epochs": 100, "test_accuracy": 0.81,
                         "sha256": "x"}
    out = training_summary({"3%": trained, "untrained": tiny_vit})
    assert out == {"3%": {"fraction": 0.03, "train_images": 1800, "epochs": 100, "test_accuracy": 0.81},
                   "untrained": {"fraction": None, "train_images": None, "epochs": None, "test_accuracy": None}}


def _probe_data(n, classes, seed):
    """uint8 images whose brightness pattern depends on the class (learnable), in two minibatches."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, 28, 28), generator=gen)
    for c in range(classes):
        images[labels == c, :, 4 * c:4 * c + 8, :] += 150
    images = images.clamp(0, 255).to(torch.uint8)
    half = n // 2
    return [(images[:half], labels[:half]), (images[half:], labels[half:])]


def test_block_probes_equal_probe_layers_per_model(tiny_vit, tiny_resnet):
    from vitcnn_utils.measure import probe_layers
    fit, val, test = _probe_data(24, 3, 0), _probe_data(12, 3, 1), _probe_data(30, 3, 2)
    for model, agg in ((tiny_vit, "first"), (tiny_resnet, "gap")):
        models = {"a": model, "b": _perturbed(model, 1.0, 3)}
        out = block_probes(models, fit, val, test, 3, agg)
        assert list(out) == ["a", "b"]
        for label, m in models.items():
            ref = probe_layers(m, block_layers(m, with_input=False), fit, val, test, 3, (agg,), progress=False)
            assert out[label].shape == (len(block_layers(m, with_input=False)),)
            assert torch.equal(out[label], ref.accuracy[agg][:, 0])
            assert ((out[label] * 30) - (out[label] * 30).round()).abs().max() < 1e-9   # k / 30 correct

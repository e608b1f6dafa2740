"""Chapter "spatial" helpers: token geometry, token heatmaps, and Fig 11 probe curves, against brute force."""
import pytest
import torch

from vitcnn_utils.data import normalize
from vitcnn_utils.hooks import block_outputs, capture, normalised_depth
from vitcnn_utils.chapters.spatial import localisation_summary
from vitcnn_utils.localisation import position_maps
from vitcnn_utils.measure import token_geometry, token_patch_cka
from vitcnn_utils.chapters.spatial import chosen_lambda_range, probe_curves, token_accuracy_spread
from vitcnn_utils.measure import count_classes, probe_aggregations, probe_layers, spatial_probes
from vitcnn_utils.probes import ProbeResult


def _batches(n=32, batch=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    images[:, :, :14, :14] = (labels * 60).to(torch.uint8)[:, None, None, None]   # class-dependent corner
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


def test_token_geometry_of_vits_and_resnet(tiny_vit, tiny_vit_gap, tiny_resnet):
    batches = _batches()
    assert token_geometry(tiny_vit, "blocks.1", batches) == {"patch_size": 4, "grid": (7, 7), "num_prefix_tokens": 1}
    assert token_geometry(tiny_vit_gap, "blocks.1", batches)["num_prefix_tokens"] == 0
    x = normalize(batches[0][0])
    for layer in ("layer1.0", "layer4.0"):
        h, w = capture(tiny_resnet, x, layer)[layer].shape[-2:]       # brute force: the captured map's size
        geometry = token_geometry(tiny_resnet, layer, batches)
        assert geometry == {"patch_size": 28 // h, "grid": (h, w), "num_prefix_tokens": 0}
    assert token_geometry(tiny_resnet, "layer4.0", batches)["grid"] == (7, 7)


def test_token_geometry_rejects_maps_that_do_not_tile_the_input():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, kernel_size=3, stride=2)).eval()    # 28 -> 13
    model.vitcnn_input = "fashion-mnist"
    with pytest.raises(ValueError, match="does not tile"):
        token_geometry(model, "0", _batches())
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3)).eval()
    flat.vitcnn_input = "fashion-mnist"
    with pytest.raises(ValueError, match="not a"):
        token_geometry(flat, "1", _batches())


def test_position_maps_brute_force():
    grid = (3, 4)
    matrix = torch.arange(144, dtype=torch.float32).reshape(12, 12) / 7
    positions = [(0, 0), (1, 3), (2, 1)]
    maps = position_maps(matrix, grid, positions)
    assert maps.shape == (3, 3, 4) and maps.dtype == torch.float64
    for k, (tr, tc) in enumerate(positions):
        for r in range(3):
            for c in range(4):
                assert maps[k, r, c].item() == pytest.approx(matrix[tr * 4 + tc, r * 4 + c].item())
    with pytest.raises(ValueError, match="outside"):
        position_maps(matrix, grid, [(3, 0)])
    with pytest.raises(ValueError, match="does not match"):
        position_maps(matrix, (4, 4), [(0, 0)])


def test_position_maps_of_a_patch_embedding_peak_at_the_own_patch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, kernel_size=4, stride=4)).eval()
    model.vitcnn_input = "fashion-mnist"
    batches = _batches(96, 48)
    g = token_geometry(model, "0", batches)
    matrix = token_patch_cka(model, batches, "0", g["patch_size"], g["grid"], g["num_prefix_tokens"])
    positions = [(0, 0), (3, 3), (2, 5)]
    maps = position_maps(matrix, g["grid"], positions)
    for k, (r, c) in enumerate(positions):
        assert divmod(int(maps[k].argmax()), 7) == (r, c)


def test_probe_curves_average_spatial_tokens_only():
    tokens = torch.tensor([[0.9, 0.2, 0.4, 0.6], [0.1, 0.5, 0.5, 0.8]], dtype=torch.float64)
    result = ProbeResult(["blocks.0", "blocks.1"],
                         {"first": torch.tensor([[0.7], [0.8]]), "gap_spatial": torch.tensor([[0.3], [0.6]]),
                          "tokens": tokens}, {}, 10, 10, 10)
    curves = probe_curves(result, num_prefix_tokens=1)
    assert set(curves) == {"cls", "spatial_gap", "tokens"}
    assert torch.allclose(curves["tokens"], torch.tensor([0.4, 0.6], dtype=torch.float64))
    assert torch.allclose(curves["cls"], torch.tensor([0.7, 0.8], dtype=torch.float64))
    assert curves["tokens"].dtype == torch.float64
    spread = token_accuracy_spread(result, num_prefix_tokens=1)       # token 0 (CLS) left out
    assert spread["min"].tolist() == [0.2, 0.5] and spread["max"].tolist() == [0.6, 0.8]
    no_prefix = probe_curves(ProbeResult(["a", "b"], {"gap": torch.tensor([[0.5], [0.6]]), "tokens": tokens},
                                         {}, 1, 1, 1))
    assert torch.allclose(no_prefix["tokens"], tokens.mean(1)) and "gap" in no_prefix


def test_spatial_probes_match_probe_layers(tiny_vit, tiny_resnet):
    fit, val, test = _batches(32, 16, seed=0), _batches(16, 16, seed=1), _batches(24, 12, seed=2)
    assert probe_aggregations(tiny_vit) == ("first", "gap_spatial", "tokens")
    assert probe_aggregations(tiny_resnet) == ("gap", "tokens")
    for model in (tiny_vit, tiny_resnet):
        got = spatial_probes(model, fit, val, test)                     # num_classes inferred: 4
        ref = probe_layers(model, block_outputs(model), fit, val, test, 4, aggregations=probe_aggregations(model),
                           progress=False)
        assert got.layers == block_outputs(model) and set(got.accuracy) == set(probe_aggregations(model))
        for agg in ref.accuracy:
            assert torch.equal(got.accuracy[agg], ref.accuracy[agg])
        assert got.n_fit == 32 and got.n_val == 16 and got.n_test == 24
    assert spatial_probes(tiny_resnet, fit, val, test).accuracy["tokens"].shape[1] == 49   # pooled to 7x7


def test_normalised_depth():
    assert normalised_depth(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert normalised_depth(1).tolist() == [0.0]        # one definition (hooks): a single layer sits at 0
    with pytest.raises(ValueError):
        normalised_depth(0)


def test_count_classes():
    assert count_classes(_batches(32, 16, classes=4)) == 4
    with pytest.raises(ValueError):
        count_classes([])


def test_localisation_summary_ignores_undefined_entries():
    grid = (3, 3)
    matrix = torch.full((9, 9), 0.1, dtype=torch.float64) + 0.5 * torch.eye(9, dtype=torch.float64)
    matrix[:, 8] = float("nan")                  # patch 8 constant: its column undefined
    matrix[2, 5] = 0.9                           # token 2 prefers patch 5
    matrix[0] = float("nan")                     # token 0 constant: its row undefined
    s = localisation_summary(matrix, grid)
    # brute force: tokens 1..7 have a defined own entry; token 2 misses, others hit -> 6 / 7; interior = token 4
    assert s["own_patch_is_best"] == pytest.approx(6 / 7) and s["interior_own_patch_is_best"] == 1.0
    own = [matrix[i, i].item() for i in range(9) if matrix[i, i] == matrix[i, i]]
    other = [matrix[i, j].item() for i in range(9) for j in range(9) if i != j and matrix[i, j] == matrix[i, j]]
    assert s["mean_own"] == pytest.approx(sum(own) / len(own))
    assert s["mean_other"] == pytest.approx(sum(other) / len(other))
    assert s["undefined_fraction"] == pytest.approx((9 + 8) / 81)


def test_chosen_lambda_range():
    result = ProbeResult(["a"], {}, {"gap": torch.tensor([[1e-2]], dtype=torch.float64),
                                     "tokens": torch.tensor([[1e-4, 10.0]], dtype=torch.float64)}, 1, 1, 1)
    assert chosen_lambda_range(result) == (1e-4, 10.0)

"""Issue 21 (reliability, second round): silent wrong answers and misleading errors of the measurements, hooks,
the forward loop, attention and localisation maths. Each test failed before its fix."""
import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vitcnn_utils import attention, localisation, measure, probes
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.data import preprocessor
from vitcnn_utils.hooks import Capture, capture
from vitcnn_utils.runner import features, preserved_state


def _batches(n=4, size=2, seed=0, side=28):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8, generator=g)
    return [(images[i:i + size], torch.arange(i, i + size) % 2) for i in range(0, n, size)]


def _vit(**kw):
    torch.manual_seed(0)
    spec = dict(embed_dim=16, depth=2, num_heads=2, mlp_ratio=1.0)
    spec.update(kw)
    return build_vit(**spec).eval()


# ---- 5: non-square patches ----------------------------------------------------------------------------------

def _brute_centres(gh, gw, ph, pw):
    return torch.tensor([[r * ph, c * pw] for r in range(gh) for c in range(gw)], dtype=torch.float64)


def test_patch_distances_per_axis():
    d = attention.patch_distances((2, 3), (4, 2))
    c = _brute_centres(2, 3, 4, 2)
    assert torch.allclose(d, torch.cdist(c, c), atol=1e-12)
    assert d[0, 5].item() == pytest.approx(math.hypot(4, 4))


def test_non_square_patches_distances_match_brute_force():
    model = _vit(patch_size=(4, 2))                         # 7×14 grid of 4×2-pixel patches
    c = _brute_centres(7, 14, 4, 2)
    brute = torch.cdist(c, c).mean().item()
    assert measure.uniform_distance(model) == pytest.approx(brute, abs=1e-9)          # was 22.43 px (4 both ways)
    batches = _batches(2, 2)
    dist, _ = measure.attention_distances(model, batches)
    probs = capture(model, preprocessor(model)(batches[0][0]), "blocks.0.attn.probs")["blocks.0.attn.probs"].double()
    p = probs[:, :, 1:, 1:]
    p = p / p.sum(-1, keepdim=True)
    expected = (p * torch.cdist(c, c)).sum(-1).mean((0, 2))
    assert torch.allclose(dist[0], expected, atol=1e-6)


# ---- 6: a Capture transform that returns a view -------------------------------------------------------------

def test_capture_transform_returning_a_view_is_copied(tiny_resnet, images):
    x = images
    reference = capture(tiny_resnet, x, "layer1.0.bn3")["layer1.0.bn3"]
    with Capture(tiny_resnet, "layer1.0.bn3", transform=lambda t: t.flatten(1)) as cap, torch.no_grad():
        got = cap(x)["layer1.0.bn3"]
    assert (reference < 0).any()
    assert torch.equal(got, reference.flatten(1))           # not overwritten by the unit's in-place add / ReLU


# ---- 7: unknown layer keys ----------------------------------------------------------------------------------

def test_layers_key_matching_no_model_is_an_error(tiny_vit):
    with pytest.raises(ValueError, match=r"'ViT'.*models are: 'vit'"):
        measure.model_heatmaps({"vit": tiny_vit}, _batches(8, 4), layers={"ViT": ["blocks.0"]}, progress=False)


# ---- 8: models are left as they were ------------------------------------------------------------------------

def test_forward_passes_restore_train_mode():
    model = _vit().train()
    model.blocks[0].eval()                                          # a mixed state is restored module by module
    list(features(model, _batches(), "blocks.0"))
    assert model.training and not model.blocks[0].training and model.blocks[1].training
    with pytest.raises(AssertionError, match="Input height"):      # timm refuses the second minibatch
        list(features(model, [(torch.zeros(2, 1, 28, 28), None), (torch.zeros(2, 1, 27, 27), None)], "blocks.0"))
    assert model.training and not model.blocks[0].training


def test_interleaved_loops_over_one_model_restore_after_the_last():
    model = _vit().train()
    a, b = features(model, _batches(6, 2), "blocks.0"), features(model, _batches(6, 2), "blocks.0")
    next(a), next(b)
    list(a)                                                         # a ends while b still runs: b stays in eval
    assert not model.training
    list(b)
    assert model.training


def test_effective_receptive_field_leaves_grads_and_mode_alone():
    model = _vit().train()
    frozen = model.patch_embed.proj.weight
    frozen.requires_grad_(False)
    kept = torch.full_like(model.head.weight, 7.0)
    model.head.weight.grad = kept
    measure.effective_receptive_field(model, _batches(2, 2)[0][0], "blocks.0")
    assert model.training and all(m.training for m in model.modules())
    assert model.head.weight.grad is kept and torch.equal(kept, torch.full_like(kept, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "head.weight")
    assert not frozen.requires_grad and model.head.weight.requires_grad


def test_effective_receptive_field_inside_an_open_loop_restores_its_own_changes():
    model = _vit().train()
    loop = features(model, _batches(4, 2), "blocks.0")
    next(loop)
    measure.effective_receptive_field(model, _batches(2, 2)[0][0], "blocks.0")
    assert all(p.requires_grad for p in model.parameters()) and not model.training     # the loop's eval mode
    list(loop)
    assert model.training


def test_preserved_state_restores_on_error():
    model = _vit().train()
    with pytest.raises(KeyError):
        with preserved_state(model):
            model.eval()
            model.head.weight.requires_grad_(False)
            raise KeyError("boom")
    assert model.training and model.head.weight.requires_grad


# ---- 12: skip ratios of a block without skips -----------------------------------------------------------------

def test_vit_skip_ratios_of_a_no_skip_block_are_nan_with_a_warning():
    model = _vit(no_skip_blocks=[1])
    with pytest.warns(UserWarning, match=r"blocks\.1 has no skip connections"):
        ratios, names = measure.vit_skip_ratios(model, _batches())
    assert names[2:] == ["blocks.1 attn", "blocks.1 mlp"]
    assert torch.isnan(ratios[2:]).all() and torch.isfinite(ratios[:2]).all()


def test_vit_skip_ratios_of_a_resnet_is_a_clear_error(tiny_resnet):
    with pytest.raises(ValueError, match="resnet_skip_ratios"):
        measure.vit_skip_ratios(tiny_resnet, _batches())


# ---- 13: attention probabilities in train mode ----------------------------------------------------------------

def test_probs_are_captured_before_attention_dropout():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                              attn_drop_rate=0.5).train()
    probs = capture(model, torch.randn(2, 1, 28, 28), "blocks.0.attn.probs")["blocks.0.attn.probs"]
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 17), atol=1e-5)


# ---- 14: probes of a GAP ViT with register tokens -------------------------------------------------------------

def test_register_tokens_are_not_a_class_token():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                              class_token=False, reg_tokens=2, global_pool="avg")
    model.vitcnn_input = "fashion-mnist"
    assert model.num_prefix_tokens == 2
    assert "first" not in measure.probe_aggregations(model)
    tokens = torch.randn(2, 18, 4)
    with pytest.raises(ValueError, match="no class token"):
        probes.aggregate(tokens, 2, aggregations=("first",), class_token=False)
    with pytest.raises(ValueError, match="no class token"):
        measure.spatial_probes(model, _batches(), _batches(), _batches(), aggregations=("first",))


# ---- 15: rank correlation ----------------------------------------------------------------------------------------

def test_rank_correlation_undefined_is_nan():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert math.isnan(attention.rank_correlation(torch.ones(4), x))
    assert math.isnan(attention.rank_correlation(x, torch.tensor([1.0, float("nan"), 2.0, 3.0])))
    assert attention.rank_correlation(x, x) == pytest.approx(1.0)


# ---- 17 (part): erf_radius ----------------------------------------------------------------------------------------

def test_erf_radius_refuses_impossible_arguments():
    erf = torch.rand(9, 9, dtype=torch.float64)
    for fraction in (-1, 0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction must be in"):
            localisation.erf_radius(erf, fraction)
    with pytest.raises(ValueError, match="no mass"):
        localisation.erf_radius(torch.zeros(9, 9))
    bad = erf.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        localisation.erf_radius(bad)
    assert localisation.erf_radius(erf, 1.0) == pytest.approx(math.hypot(4, 4))


# ---- 19: TQDM_DISABLE --------------------------------------------------------------------------------------------

def test_tqdm_disable_is_honoured_with_a_label(tiny_vit, monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    list(features(tiny_vit, _batches(), "blocks.0", progress="label"))
    assert "label" not in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "0")
    list(features(tiny_vit, _batches(), "blocks.0", progress="label"))
    assert "label" in capsys.readouterr().err


# ---- misleading errors -----------------------------------------------------------------------------------------

def test_shared_blocks_with_default_layers():
    model = _vit()
    model.blocks[1] = model.blocks[0]
    message = r"'blocks\.1\.norm1' is the same module as 'blocks\.0\.norm1': 'blocks\.1' and 'blocks\.0' .*deepcopy"
    with pytest.raises(ValueError, match=message):            # was KeyError: 'blocks.1.norm1'
        Capture(model, "default")
    with pytest.raises(ValueError, match=message):            # was "matches no layer", listing blocks.0 only
        Capture(model, "blocks.1.norm1")
    with pytest.raises(ValueError, match=r"'blocks\.1\.attn\.probs' is the same module as 'blocks\.0\.attn\.probs'"):
        Capture(model, "blocks.1.attn.probs")


@pytest.mark.parametrize("bad", ["tensor", "list"])
def test_batches_must_be_pairs(tiny_vit, bad):
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    batches = images if bad == "tensor" else [images, images]
    with pytest.raises(TypeError, match=r"\(images, labels\) pairs"):
        list(features(tiny_vit, batches, "blocks.0"))


def test_no_models_is_a_clear_error():
    with pytest.raises(ValueError, match="no models"):
        measure.model_heatmaps({}, _batches(), progress=False)


def test_head_subset_block_out_of_range(tiny_vit, tiny_resnet):
    with pytest.raises(ValueError, match=r"block must be .* 0 and 1"):
        measure.head_subset_cka(tiny_vit, tiny_resnet, _batches(), ["layer1.0"], block=5)


def test_dynamic_img_size_vit_at_another_size():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                              dynamic_img_size=True).eval()
    model.vitcnn_input = "fashion-mnist"
    batches = _batches(2, 2, side=20)                        # a 5×5 grid, not the 7×7 of img_size
    dist, n = measure.attention_distances(model, batches)
    probs = capture(model, preprocessor(model)(batches[0][0]), "blocks.0.attn.probs")["blocks.0.attn.probs"]
    expected = attention.mean_attention_distance(probs, 4, (5, 5), num_prefix_tokens=1)
    assert n == 2 and torch.allclose(dist[0], expected, atol=1e-9)


def test_patch_size_and_grid_are_checked(tiny_vit):
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        localisation.image_patches(x, 0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        localisation.image_patches(x[0], 4)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        measure.token_patch_cka(tiny_vit, _batches(), "blocks.0", 0, (7, 7), 1)
    for grid in ((4, 4, 1), 4.0, (0, 4)):
        with pytest.raises(ValueError, match=r"grid must be"):
            localisation.grid_tokens(torch.zeros(2, 16, 3), grid)
        with pytest.raises(ValueError, match=r"grid must be"):
            measure.token_patch_cka(tiny_vit, _batches(), "blocks.0", 4, grid, 1)


def test_probes_refuse_a_generator_of_batches_and_a_single_class():
    """Issue 21: spatial_probes(fit=<generator>) said "every site needs fit (fit: [])" (counting consumed it)."""
    images = torch.randint(0, 255, (8, 1, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    with pytest.raises(TypeError, match="re-iterable.*list"):
        measure.count_classes(b for b in [(images, labels)])
    with pytest.raises(ValueError, match="single class"):
        measure.count_classes([(images, torch.zeros(8, dtype=torch.long))])
    assert measure.count_classes([(images, labels)]) == 4

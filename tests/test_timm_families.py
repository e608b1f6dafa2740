"""Default layers for timm families beyond ViT and ResNet (issue 16, item 2): ConvNeXt, Swin, EfficientNet,
RegNet and EVA-02 get block-level default layers from timm's own ``feature_info`` metadata; the attention
measurements say clearly which models they need (global attention over a patch grid: a plain ViT or EVA).

The named architectures are built with random weights (``pretrained=False``) and run at small inputs."""
import math

import pytest
import timm
import torch

from vitcnn_utils.measure import attention_distances, uniform_distance
from vitcnn_utils.cka import MinibatchCKA
from vitcnn_utils.hooks import (Capture, attention_modules, block_layers, block_outputs, default_layers,
                                global_attention_issue, input_layer, resolve_layers)

# name: (timm kwargs, input size, number of default layers = layer 0 + block outputs, layer 0, last block)
FAMILIES = {
    "convnext_atto": ({}, 32, 1 + 12, "stages.0.blocks.0:in", "stages.3.blocks.1"),
    "swin_tiny_patch4_window7_224": ({"img_size": 56}, 56, 1 + 12, "layers.0.blocks.0:in", "layers.3.blocks.1"),
    "efficientnet_b0": ({}, 32, 1 + 16, "blocks.0.0:in", "blocks.6.0"),
    "regnety_002": ({}, 32, 1 + 13, "stem", "s4.b7"),
    "eva02_tiny_patch14_224": ({"img_size": 56}, 56, 1 + 12, "blocks.0:in", "blocks.11"),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: timm.create_model(name, pretrained=False, **kw).eval() for name, (kw, *_) in FAMILIES.items()}


def images(size, n=6, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FAMILIES)
def test_default_layers_from_feature_info(models, name):
    model = models[name]
    _, size, count, layer0, last = FAMILIES[name]
    layers = default_layers(model)
    assert len(layers) == count and len(set(layers)) == count
    assert layers[0] == layer0 == input_layer(model) and layers[-1] == last
    assert layers == block_layers(model) and layers[1:] == block_outputs(model) == block_layers(model, False)
    # every stage timm names in feature_info ends at one of the block outputs (its last block, or itself)
    for info in model.feature_info:
        assert any(b == info["module"] or b.startswith(info["module"] + ".") for b in layers), info["module"]


@pytest.mark.parametrize("name", FAMILIES)
def test_capture_default_in_execution_order_batch_first_and_cka(models, name):
    model = models[name]
    _, size, count, *_ = FAMILIES[name]
    x = images(size)
    with Capture(model, "default") as cap, torch.inference_mode():
        feats = cap(x)
        out = cap.output
    assert list(feats) == default_layers(model)                  # all layers, in the order they ran
    assert all(v.shape[0] == len(x) and torch.isfinite(v).all() for v in feats.values())
    with torch.inference_mode():
        assert torch.equal(model(x), out)                         # the hooks change nothing
    # CKA consumes them: the within-model heatmap over all default layers is finite, 1 on the diagonal
    cka = MinibatchCKA()
    cka.update(feats)
    heat = cka.compute()
    assert heat.shape == (count, count) and torch.isfinite(heat).all()
    assert torch.allclose(heat.diagonal(), torch.ones(count, dtype=heat.dtype), atol=1e-9)
    # and a heatmap between two of them (layer 0 against the last block) through the two-argument update
    pair = MinibatchCKA()
    first, last = list(feats)[0], list(feats)[-1]
    pair.update({first: feats[first]}, {last: feats[last]})
    assert math.isfinite(pair.compute().item())


def test_attention_measurements_need_global_attention(models):
    swin, convnext = models["swin_tiny_patch4_window7_224"], models["convnext_atto"]
    assert "local windows" in global_attention_issue(swin) and "WindowAttention" in global_attention_issue(swin)
    assert "no attention layers" in global_attention_issue(convnext)
    with pytest.raises(ValueError, match="local windows.*plain ViT"):
        resolve_layers(swin, "layers.*.blocks.*.attn.probs")
    with pytest.raises(ValueError, match="no attention layers.*plain ViT"):
        resolve_layers(convnext, "*.probs")
    batches = [(torch.rand(4, 3, 56, 56), None)]
    with pytest.raises(ValueError, match="attention distance is not defined.*local windows"):
        attention_distances(swin, batches)
    with pytest.raises(ValueError, match="attention distance is not defined.*no attention layers"):
        attention_distances(convnext, batches)
    with pytest.raises(ValueError, match="no attention layers"):
        uniform_distance(models["efficientnet_b0"])


def test_eva_attention_probabilities_and_distance(models):
    """EVA's EvaAttention has an unfused path that materialises the softmax: its probabilities are captured
    like a timm ViT's (global attention of all tokens over a 4×4 patch grid + CLS), and attention distance
    runs on it."""
    eva = models["eva02_tiny_patch14_224"]
    assert global_attention_issue(eva) is None and len(attention_modules(eva)) == len(eva.blocks)
    fused_before = [blk.attn.fused_attn for blk in eva.blocks]
    x = images(56, n=4)
    with torch.inference_mode():
        reference = eva(x)
    with Capture(eva, "blocks.*.attn.probs") as cap, torch.inference_mode():
        probs = cap(x)
        out = cap.output
    assert [blk.attn.fused_attn for blk in eva.blocks] == fused_before
    assert torch.allclose(out, reference, atol=1e-4)             # unfused path = fused path
    heads, tokens = eva.blocks[0].attn.num_heads, 1 + 4 * 4
    for p in probs.values():
        assert p.shape == (4, heads, tokens, tokens)
        assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5) and (p >= 0).all()
    dist, n = attention_distances(eva, [(torch.rand(4, 3, 56, 56), None)])
    assert n == 4 and dist.shape == (len(eva.blocks), heads) and torch.isfinite(dist).all()
    assert (dist >= 0).all() and (dist <= 14 * math.hypot(3, 3)).all()

"""Hooks: names, order, shapes, and values equal to what the model computes."""
import pytest
import torch

from vitcnn_utils.hooks import Capture, available_layers, capture, default_layers, resolve_layers


def test_vit_cls_default_layers_order_and_shapes(tiny_vit, images):
    feats = capture(tiny_vit, images)
    per_block = ["norm1", "attn", "norm2", "mlp.act", "mlp"]
    expected = ["norm_pre"] + [f"blocks.{i}.{s}" for i in range(2) for s in per_block + [""]]
    assert list(feats) == [name.rstrip(".") for name in expected]
    n_tokens = 1 + 49                                    # CLS kept, 7×7 patches
    assert feats["blocks.0"].shape == (6, n_tokens, 32)
    assert feats["blocks.1.mlp.act"].shape == (6, n_tokens, 64)
    assert all(not t.requires_grad for t in feats.values())


def test_vit_block_output_equals_model_computation(tiny_vit, images):
    with torch.no_grad():
        feats = capture(tiny_vit, images, ["blocks.1", "blocks.1:in", "blocks.1.ls1", "blocks.1.norm2:in"])
        expected = tiny_vit.forward_features(images)     # blocks -> final norm
        assert torch.allclose(tiny_vit.norm(feats["blocks.1"]), expected, atol=1e-6)
        block = tiny_vit.blocks[1]
        mid = feats["blocks.1:in"] + block.attn(block.norm1(feats["blocks.1:in"]))
        assert torch.allclose(feats["blocks.1.norm2:in"], mid, atol=1e-6)
        assert torch.allclose(feats["blocks.1.ls1"], mid - feats["blocks.1:in"], atol=1e-6)


def test_attention_probabilities(tiny_vit, images):
    attn_module = tiny_vit.blocks[0].attn
    fused_before = attn_module.fused_attn
    attn_module.fused_attn = True                      # even with fused attention on, probs are captured
    feats = capture(tiny_vit, images, "blocks.*.attn.probs")
    assert list(feats) == ["blocks.0.attn.probs", "blocks.1.attn.probs"]
    probs = feats["blocks.0.attn.probs"]
    assert probs.shape == (6, 4, 50, 50)
    assert torch.allclose(probs.sum(-1), torch.ones(6, 4, 50), atol=1e-5) and (probs >= 0).all()
    # the probabilities reproduce the attention output: proj(probs @ v)
    with torch.no_grad():
        x = capture(tiny_vit, images, "blocks.0.norm1")["blocks.0.norm1"]
        b, n, c = x.shape
        qkv = attn_module.qkv(x).reshape(b, n, 3, 4, c // 4).permute(2, 0, 3, 1, 4)
        ref = attn_module.proj((probs @ qkv[2]).transpose(1, 2).reshape(b, n, c))
        assert torch.allclose(ref, capture(tiny_vit, images, "blocks.0.attn")["blocks.0.attn"], atol=1e-5)
    assert attn_module.fused_attn is True                # restored
    attn_module.fused_attn = fused_before


def test_vit_gap_has_no_cls_token(tiny_vit_gap, images):
    feats = capture(tiny_vit_gap, images, ["blocks.1", "blocks.1.attn.probs"])
    assert feats["blocks.1"].shape == (6, 49, 32)
    assert feats["blocks.1.attn.probs"].shape == (6, 2, 49, 49)
    with torch.no_grad():
        logits = tiny_vit_gap.forward_head(tiny_vit_gap.norm(feats["blocks.1"]))
        assert torch.allclose(logits, tiny_vit_gap(images), atol=1e-5)


def test_resnet_layers_and_values_despite_inplace_ops(tiny_resnet, images):
    feats = capture(tiny_resnet, images, ["default", "layer4.0:in"])
    units = [f"layer{s}.0" for s in range(1, 5)]
    expected = ["maxpool"] + [f"{u}.{p}" for u in units for p in ("act1", "act2", "bn3", "")]
    expected = [name.rstrip(".") for name in expected]
    assert [k for k in feats if k != "layer4.0:in"] == expected
    assert feats["maxpool"].shape == (6, 64, 28, 28)
    assert feats["layer2.0"].shape == (6, 32, 14, 14)
    assert feats["layer4.0"].shape == (6, 32, 7, 7)
    unit = tiny_resnet.layer4[0]
    with torch.no_grad():
        # bn3 is overwritten in place by `x += shortcut` inside the unit: the captured copy must predate that
        bn3 = unit.bn3(unit.conv3(feats["layer4.0.act2"]))
        assert torch.allclose(feats["layer4.0.bn3"], bn3, atol=1e-5)
        shortcut = unit.downsample(feats["layer4.0:in"]) if unit.downsample is not None else feats["layer4.0:in"]
        assert torch.allclose(feats["layer4.0"], torch.relu(bn3 + shortcut), atol=1e-5)
        assert torch.allclose(feats["layer4.0"], tiny_resnet.forward_features(images), atol=1e-5)
        # act1 follows an in-place ReLU on bn1's output: it must be non-negative and equal relu(bn1(conv1))
        assert torch.allclose(feats["layer1.0.act1"], torch.relu(tiny_resnet.layer1[0].bn1(
            tiny_resnet.layer1[0].conv1(feats["maxpool"]))), atol=1e-5)


def test_timm_resnet50_default_layers():
    import timm
    model = timm.create_model("resnet50", num_classes=0).eval()
    names = default_layers(model)
    assert len(names) == 1 + 16 * 4 and names[-1] == "layer4.2"
    feats = capture(model, torch.randn(4, 3, 64, 64), names)
    assert feats["layer4.2"].shape == (4, 2048, 2, 2)


def test_hooks_removed_after_use_and_on_error(tiny_vit, images):
    def n_hooks(model):
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert n_hooks(tiny_vit) == 0
    fused_before = [blk.attn.fused_attn for blk in tiny_vit.blocks]
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(tiny_vit, ["default", "blocks.*.attn.probs"]) as cap:
            cap(images)
            assert n_hooks(tiny_vit) > 0
            raise RuntimeError("boom")
    assert n_hooks(tiny_vit) == 0
    assert [blk.attn.fused_attn for blk in tiny_vit.blocks] == fused_before   # restored
    with pytest.raises(RuntimeError, match="not active"):
        Capture(tiny_vit)(images)


def test_layer_selection_errors_and_missing_layers(tiny_vit, images):
    with pytest.raises(ValueError, match="matches no layer"):
        resolve_layers(tiny_vit, "blocks.9.*")
    with pytest.raises(ValueError, match="no default layers"):
        default_layers(torch.nn.Linear(3, 3))
    assert "blocks.0.attn.probs" in available_layers(tiny_vit) and "blocks.0:in" in available_layers(tiny_vit)

    class Partial(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.used(x)
    with pytest.raises(RuntimeError, match="did not run.*unused"):
        capture(Partial(), torch.randn(2, 4), ["used", "unused"])


def test_detach_false_keeps_gradients(tiny_vit, images):
    x = images.clone().requires_grad_(True)
    feats = capture(tiny_vit, x, "blocks.0", detach=False)
    feats["blocks.0"][:, 25].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_two_captures_on_one_model_each_record_their_own_pass(tiny_vit, images):
    """Two Captures on the same model (nested) each see only the forward passes they run themselves."""
    with Capture(tiny_vit) as cap_a, Capture(tiny_vit, ["norm_pre", "blocks.1"]) as cap_b, torch.no_grad():
        feats_a = cap_a(images)
        feats_b = cap_b(images + 1)
        again_a = cap_a(images)
    assert list(feats_b) == ["norm_pre", "blocks.1"]
    assert torch.equal(feats_a["blocks.1"], again_a["blocks.1"])
    assert not torch.equal(feats_a["blocks.1"], feats_b["blocks.1"])
    assert torch.equal(capture(tiny_vit, images + 1, "blocks.1")["blocks.1"], feats_b["blocks.1"])


def test_model_heatmaps_of_one_model_under_two_names(tiny_vit):
    """``model_heatmaps({"a": m, "b": m})``: one capture per model object, its results shared by both names."""
    from vitcnn_utils.measure import model_heatmaps

    images = (torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8)
    batches = [(images[i:i + 8], None) for i in range(0, 24, 8)]
    alone = model_heatmaps({"m": tiny_vit}, batches, progress=False)
    both = model_heatmaps({"a": tiny_vit, "b": tiny_vit}, batches, progress=False)
    assert both.names["a"] == both.names["b"] == alone.names["m"]
    for pair in (("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")):
        assert torch.allclose(both[pair], alone["m", "m"], atol=1e-12, rtol=0)
    # different layers of the same object under two names: each name keeps its own layers, in execution order
    some = model_heatmaps({"a": tiny_vit, "b": tiny_vit}, batches, layers={"b": ["blocks.1", "norm_pre"]},
                          progress=False)
    assert some.names["a"] == alone.names["m"] and some.names["b"] == ["norm_pre", "blocks.1"]
    idx = [alone.names["m"].index(n) for n in ("norm_pre", "blocks.1")]
    assert torch.allclose(some["a", "b"], alone["m", "m"][:, idx], atol=1e-12, rtol=0)


def test_fused_attention_restored_whatever_the_exit_order(tiny_vit, images):
    attn = tiny_vit.blocks[0].attn
    before = attn.fused_attn
    attn.fused_attn = True
    try:
        first = Capture(tiny_vit, "blocks.0.attn.probs").__enter__()
        second = Capture(tiny_vit, ["blocks.0.attn.probs", "blocks.0"]).__enter__()
        first.__exit__(None, None, None)                    # the first one out while the second is still open
        assert attn.fused_attn is False                      # the second still needs the probabilities
        with torch.no_grad():
            assert second(images)["blocks.0.attn.probs"].shape == (6, 4, 50, 50)
        second.__exit__(None, None, None)
        assert attn.fused_attn is True
    finally:
        attn.fused_attn = before


def test_capture_of_no_layers_says_how_to_choose_them(tiny_vit):
    with pytest.raises(ValueError, match=r"no layers were requested.*available_layers.*'default'"):
        Capture(tiny_vit, [])

"""load_model: timm names (random init, local weights, offline pretrained) and the paper's architectures."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitcnn_utils.cka import MinibatchCKA
from vitcnn_utils.hooks import default_layers
from vitcnn_utils.runner import features
from vitcnn_utils.architectures import build_vit
from vitcnn_utils.models import load_model


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="neither a timm model nor 'zoo:<name>'"):
        load_model("vit_nonexistent_model")


def test_pretrained_offline_says_how_to_use_a_local_file(monkeypatch):
    """Offline fails at once (no network attempt: tests/test_models_data_errors.py) and says what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"weights='/path/to/model.safetensors'"):
        load_model("resnet18", pretrained=True)


def test_local_weights_file(tmp_path):
    torch.manual_seed(0)
    source = load_model("resnet18", num_classes=7)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), path)
    loaded = load_model("resnet18", weights=path, num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("resnet18", weights=tmp_path / "missing.safetensors")


def test_no_skip_block_removes_both_residuals():
    torch.manual_seed(0)
    model = build_vit(embed_dim=32, depth=3, num_heads=2, no_skip_blocks=[1]).eval()
    block, x = model.blocks[1], torch.randn(2, 50, 32)
    with torch.no_grad():
        assert torch.allclose(block(x), block.mlp(block.norm2(block.attn(block.norm1(x)))))
    with pytest.raises(ValueError, match="not a block index"):
        build_vit(depth=3, no_skip_blocks=[3])


def test_paper_architectures_run_through_hooks_and_cka():
    """ViT-B/16 and ResNet-50 (random init: no weights here) through the same capture and CKA path."""
    vit, resnet = load_model("vit_base_patch16_224", num_classes=0), load_model("resnet50", num_classes=0)
    assert len(default_layers(vit)) == 1 + 12 * 6
    images = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))   # float in [0, 1]
    batches = [(images[:4], None), (images[4:], None)]
    cka = MinibatchCKA()
    layers_vit, layers_resnet = ["blocks.0", "blocks.11"], ["layer1.0", "layer4.2"]
    for (fa, _), (fb, _) in zip(features(vit, batches, layers_vit), features(resnet, batches, layers_resnet)):
        assert fa["blocks.0"].shape == (4, 197, 768) and fb["layer4.2"].shape == (4, 2048, 7, 7)
        cka.update(fa, fb)
    out = cka.compute()
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_mismatched_weights_file_fails_loudly(tmp_path):
    path = tmp_path / "ten_classes.safetensors"
    save_file(load_model("resnet18", num_classes=10).state_dict(), path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model("resnet18", weights=path, num_classes=7)


# -- issue 21: arch: honours or refuses its arguments; .npz weights as strict as safetensors ------------------
def test_arch_loads_a_weights_file_strictly(tmp_path):
    """``arch:<name>`` with ``weights=`` loads the file (it used to return the untrained seed-0 network)."""
    from vitcnn_utils import zoo
    from vitcnn_utils.architectures import build_architecture
    torch.manual_seed(1)
    mine = build_architecture(zoo.SPECS["vit-cls"].arch).eval()
    path = tmp_path / "mine.safetensors"
    save_file(mine.state_dict(), path)
    loaded, untrained = load_model("arch:vit-cls", weights=path), load_model("arch:vit-cls")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), mine(x)) and not torch.allclose(untrained(x), mine(x))
    save_file(build_vit(embed_dim=32, depth=2, num_heads=2).state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(RuntimeError, match=f"weights file {tmp_path / 'other.safetensors'} does not match "
                                           r"'arch:vit-cls'.*size mismatch"):
        load_model("arch:vit-cls", weights=tmp_path / "other.safetensors")


@pytest.mark.parametrize("kwargs, message", [({"pretrained": True}, "'arch:vit-cls' has no pretrained weights"),
                                             ({"num_classes": 5}, "takes no timm arguments.*num_classes")])
def test_arch_refuses_what_it_cannot_honour(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_model("arch:vit-cls", **kwargs)


def _vit_npz(model, path):
    """A timm ViT saved in the original (per-block) JAX/Flax ``.npz`` layout that timm's reader takes."""
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {"embedding/kernel": model.patch_embed.proj.weight.permute(2, 3, 1, 0),
         "embedding/bias": model.patch_embed.proj.bias, "cls": model.cls_token,
         "Transformer/posembed_input/pos_embedding": model.pos_embed,
         "Transformer/encoder_norm/scale": model.norm.weight, "Transformer/encoder_norm/bias": model.norm.bias,
         "head/kernel": model.head.weight.T, "head/bias": model.head.bias}
    for i, block in enumerate(model.blocks):
        p = f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = block.norm1.weight, block.norm1.bias
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = block.norm2.weight, block.norm2.bias
        for n, weight, bias in zip(("query", "key", "value"), block.attn.qkv.weight.chunk(3),
                                   block.attn.qkv.bias.chunk(3)):
            w[mha + f"{n}/kernel"] = weight.T.reshape(dim, heads, dim // heads)
            w[mha + f"{n}/bias"] = bias.reshape(heads, dim // heads)
        w[mha + "out/kernel"] = block.attn.proj.weight.T.reshape(heads, dim // heads, dim)
        w[mha + "out/bias"] = block.attn.proj.bias
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"], w[p + f"MlpBlock_3/Dense_{r}/bias"] = fc.weight.T, fc.bias
    np.savez(path, **{k: v.detach().numpy() for k, v in w.items()})
    return path


_TINY = dict(img_size=32, embed_dim=32, num_heads=2)


def test_npz_weights_that_match_load_exactly(tmp_path):
    torch.manual_seed(1)
    source = load_model("vit_tiny_patch16_224", depth=2, num_classes=10, **_TINY)
    path = _vit_npz(source, tmp_path / "vit.npz")
    loaded = load_model("vit_tiny_patch16_224", weights=path, depth=2, num_classes=10, **_TINY)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x), atol=1e-6)


def test_npz_weights_are_as_strict_as_safetensors(tmp_path):
    """A 3-block, 7-class file into a 2-block, 10-class ViT used to load silently (block 2 dropped, head left
    at random init); a file for another image size was silently resampled."""
    path = _vit_npz(load_model("vit_tiny_patch16_224", depth=3, num_classes=7, **_TINY), tmp_path / "big.npz")
    with pytest.raises(RuntimeError, match=f"weights file {path} does not match") as err:
        load_model("vit_tiny_patch16_224", weights=path, depth=2, num_classes=10, **_TINY)
    message = str(err.value)
    assert "missing from the file (left at random init): head.weight, head.bias" in message
    assert "unexpected (in the file, not in the model): head/kernel, Transformer/encoderblock_2/" in message
    small = _vit_npz(load_model("vit_tiny_patch16_224", depth=2, num_classes=10, **_TINY), tmp_path / "32px.npz")
    with pytest.raises(RuntimeError, match=r"size mismatch.*pos_embed \(1, 10, 32\) from "
                                           r"Transformer/posembed_input/pos_embedding \(1, 5, 32\)"):
        load_model("vit_tiny_patch16_224", weights=small, depth=2, num_classes=10,
                   **{**_TINY, "img_size": 48})


def test_load_model_without_a_name_says_so():
    with pytest.raises(TypeError, match="name must be a model name .*got None"):
        load_model(None)

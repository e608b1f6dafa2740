"""load_model: timm names (random init, local weights, offline pretrained) and the paper's architectures."""
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

"""Skip ratios ‖z‖/‖f(z)‖ against hand computation from the modules."""
import torch

from vitcnn_utils.data import normalize
from vitcnn_utils.measure import resnet_skip_ratios, vit_skip_ratios


def test_vit_ratios_by_hand(tiny_vit):
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ratios, names = vit_skip_ratios(tiny_vit, [(images[:3], None), (images[3:], None)])
    assert ratios.shape == (4, 50) and names[:2] == ["blocks.0 attn", "blocks.0 mlp"]
    with torch.no_grad():
        x = tiny_vit.norm_pre(tiny_vit._pos_embed(tiny_vit.patch_embed(normalize(images)))).double()
        block = tiny_vit.blocks[0].double()
        attn = block.attn(block.norm1(x))
        mid = x + attn
        mlp = block.mlp(block.norm2(mid))
        tiny_vit.float()
    assert torch.allclose(ratios[0], (x.norm(dim=-1) / attn.norm(dim=-1)).mean(0), rtol=1e-4)
    assert torch.allclose(ratios[1], (mid.norm(dim=-1) / mlp.norm(dim=-1)).mean(0), rtol=1e-4)


def test_resnet_ratios_by_hand(tiny_resnet):
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ratios, units = resnet_skip_ratios(tiny_resnet, [(images, None)])
    assert units == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"] and ratios.shape == (4,)
    with torch.no_grad():
        x = tiny_resnet.maxpool(tiny_resnet.act1(tiny_resnet.bn1(tiny_resnet.conv1(normalize(images)))))
        unit = tiny_resnet.layer1[0]
        branch = unit.bn3(unit.conv3(unit.act2(unit.bn2(unit.conv2(unit.act1(unit.bn1(unit.conv1(x))))))))
        shortcut = unit.downsample(x)
    expected = (shortcut.flatten(1).norm(dim=1) / branch.flatten(1).norm(dim=1)).mean()
    assert abs(ratios[0].item() - expected.item()) < 1e-4 * expected.item()

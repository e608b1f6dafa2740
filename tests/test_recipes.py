"""The recipe ablation's model options (issue 25): fixed 2-D sin-cos position embeddings and DeiT-style
hard-label distillation from a teacher; checked against the formulas and on a few training steps."""
import math

import numpy as np
import pytest
import torch

from vitcnn_utils.architectures import build_resnet, build_vit, sincos_position_embedding
from vitcnn_utils.data import ImageSet
from vitcnn_utils.measure import attention_distances
from vitcnn_utils.train import Recipe, train


def image_set(images, labels):
    return ImageSet(images, labels, torch.arange(len(labels)))


def reference_sincos(rows, cols, dim, prefix):
    """float64 NumPy from the formula: row half then column half, each [sin(p w_k), cos(p w_k)]."""
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter) / quarter)
    out = np.zeros((prefix + rows * cols, dim))
    for r in range(rows):
        for c in range(cols):
            t = prefix + r * cols + c
            out[t, :quarter] = np.sin(r * omega)
            out[t, quarter:2 * quarter] = np.cos(r * omega)
            out[t, 2 * quarter:3 * quarter] = np.sin(c * omega)
            out[t, 3 * quarter:] = np.cos(c * omega)
    return out


@pytest.mark.parametrize("rows, cols, dim, prefix", [(7, 7, 128, 1), (3, 5, 8, 2), (14, 14, 64, 0)])
def test_sincos_embedding_matches_the_formula(rows, cols, dim, prefix):
    table = sincos_position_embedding((rows, cols), dim, prefix)
    assert table.shape == (1, prefix + rows * cols, dim) and table.dtype == torch.float32
    np.testing.assert_allclose(table[0].double().numpy(), reference_sincos(rows, cols, dim, prefix), atol=1e-7)


def test_sincos_embedding_refuses_a_width_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding((7, 7), 126)


def test_sincos_vit_keeps_its_embedding_fixed_through_training():
    torch.manual_seed(0)
    model = build_vit(embed_dim=32, depth=1, num_heads=2, pos_embed="sincos")
    before = model.pos_embed.detach().clone()
    np.testing.assert_allclose(before[0].double().numpy(), reference_sincos(7, 7, 32, 1), atol=1e-7)
    assert not model.pos_embed.requires_grad
    data = image_set(torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), torch.arange(64) % 10)
    train(model, data, data, Recipe(1, batch_size=32), seed=0)
    assert torch.equal(model.pos_embed.detach(), before)
    assert model.state_dict()["pos_embed"].shape == (1, 50, 32)           # saved with the weights


def test_vit_options_are_checked():
    with pytest.raises(ValueError, match="pos_embed must be"):
        build_vit(pos_embed="rope")
    with pytest.raises(ValueError, match="pool='cls' with distilled=True"):
        build_vit(pool="gap", distilled=True)


def test_distilled_vit_has_two_prefix_tokens_and_measures_like_any_vit():
    torch.manual_seed(0)
    model = build_vit(embed_dim=32, depth=2, num_heads=2, distilled=True).eval()
    assert model.num_prefix_tokens == 2 and model.pos_embed.shape == (1, 51, 32)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    distances, n = attention_distances(model, [(images, torch.zeros(8, dtype=torch.long))])
    assert n == 8 and distances.shape == (2, 2) and torch.isfinite(distances).all()
    assert model(images.float() / 255).shape == (8, 10)                  # inference: the two heads averaged


class Constant(torch.nn.Module):
    """A 'teacher' that always predicts one class (its logits do not depend on the image)."""

    def __init__(self, label):
        super().__init__()
        self.label, self.vitcnn_input, self.bias = label, "fashion-mnist", torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.label), 10).float() + 0 * self.bias


def test_hard_distillation_teaches_the_distillation_head_the_teachers_labels():
    """With a teacher that always says class 3, the distillation head learns to say 3 while the class head
    follows the true labels (all 7): the two terms of the loss reach the two heads."""
    torch.manual_seed(0)
    model = build_vit(embed_dim=32, depth=1, num_heads=2, distilled=True)
    data = image_set(torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8), torch.full((256,), 7))
    record = train(model, data, data, Recipe(4, batch_size=64, lr=3e-3, label_smoothing=0.0, distill="resnet"),
                   seed=0, teacher=Constant(3))
    assert not model.distilled_training and not model.training
    x = (data.images[:32].float() / 255 - 0.2860) / 0.3530
    feats = model.forward_features(x)
    assert (model.head(feats[:, 0]).argmax(-1) == 7).all()
    assert (model.head_dist(feats[:, 1]).argmax(-1) == 3).all()
    assert math.isfinite(record["test_accuracy"])


def test_distillation_arguments_must_agree():
    data = image_set(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    student = build_vit(embed_dim=32, depth=1, num_heads=2, distilled=True)
    with pytest.raises(ValueError, match="a teacher was not given"):
        train(student, data, data, Recipe(1, distill="resnet"), seed=0)
    with pytest.raises(ValueError, match="exactly when the recipe distils"):
        train(student, data, data, Recipe(1), seed=0, teacher=build_resnet())
    with pytest.raises(ValueError, match="build it with build_vit"):
        train(build_vit(embed_dim=32, depth=1, num_heads=2), data, data, Recipe(1, distill="resnet"), seed=0,
              teacher=build_resnet())


def test_block0_locality_is_the_most_local_heads_mean_over_draws_and_picks_the_derived_variant():
    from vitcnn_utils.zoo import ablation
    # head 0: 8 and 4 (mean 6); head 1: 5 and 9 (mean 7): the most local head is head 0, not min-per-draw's 4.5
    draws = [[[8.0, 5.0], [1.0, 1.0]], [[4.0, 9.0], [1.0, 1.0]]]
    assert ablation.block0_locality(draws, 10.0) == pytest.approx(0.6)
    entry = {"distances_px": draws, "uniform_distance_px": 10.0}
    far = {"distances_px": [[[9.0, 9.0]], [[9.0, 9.0]]], "uniform_distance_px": 10.0}
    arch, recipe = ablation.resolve("patch2-best", {"sincos": far, "distill": entry})
    assert arch["distilled"] and arch["patch_size"] == 2 and recipe.distill == "resnet"
    with pytest.raises(ValueError, match="not measured yet: run .*--only distill"):
        ablation.resolve("patch2-best", {"sincos": far})

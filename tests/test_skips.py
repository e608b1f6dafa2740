"""Fig 7 summaries and the Fig 8 heatmap split: hand-built matrices and brute-force float64 references."""
import math

import numpy as np
import pytest
import torch

from vitcnn_utils.cka import Heatmaps
from vitcnn_utils.data import normalize
from vitcnn_utils.hooks import default_layers, normalised_depth
from vitcnn_utils.architectures import build_vit, removed_blocks
from vitcnn_utils.chapters.skip_connections import no_skip_comparison, skip_ratio_summary
from vitcnn_utils.skips import ratio_profile, split_contrast, split_layers, split_summary
from vitcnn_utils.train import model_accuracies
from vitcnn_utils.zoo import optimisation_steps

SUBLAYERS = ("norm1", "attn", "norm2", "mlp.act", "mlp")


def vit_names(depth: int) -> list[str]:
    names = ["norm_pre"]
    for i in range(depth):
        names += [f"blocks.{i}.{s}" for s in SUBLAYERS] + [f"blocks.{i}"]
    return names


def part_matrix(names, block, before=0.8, after=0.7, across=0.1, inside=0.5):
    """CKA-like matrix with constant values per region: before/after parts of ``split_layers``, the rest."""
    b, a = split_layers(names, block)
    m = np.full((len(names), len(names)), inside)
    m[np.ix_(b, b)], m[np.ix_(a, a)] = before, after
    m[np.ix_(b, a)], m[np.ix_(a, b)] = across, across
    np.fill_diagonal(m, 1.0)
    return torch.tensor(m)


def test_split_layers_on_default_vit_names():
    names = vit_names(3)
    assert names == default_layers(build_vit(embed_dim=16, depth=3, num_heads=2))
    before, after = split_layers(names, 1)
    assert before == list(range(0, 7))                     # norm_pre + the 6 layers of block 0 (output included)
    assert after == [12] + list(range(13, 19))             # the output of block 1 + the 6 layers of block 2
    assert names[12] == "blocks.1" and [names[k] for k in after][-1] == "blocks.2"
    before0, after0 = split_layers(names, 0)
    assert before0 == [0] and after0 == list(range(6, 19))
    before2, after2 = split_layers(names, 2)               # the last block: its output alone is after it
    assert before2 == list(range(0, 13)) and after2 == [18]
    # non-block layers count by position; blocks.1x must not be mistaken for block 1
    extra = names + ["norm", "blocks.12"]
    b, a = split_layers(extra, 1)
    assert b == before and a == after + [19, 20]
    assert split_layers(extra, 2) == (before2, [18, 19, 20])


def test_split_contrast_structured_matrix():
    names = vit_names(4)
    for block in range(4):
        m = part_matrix(names, block)
        assert split_contrast(m, names, block) == pytest.approx(0.1, abs=1e-15)
        s = split_summary(m, names, block)
        assert s["across"] == pytest.approx(0.1)
        assert (s["before"] == pytest.approx(0.8)) if block > 0 else math.isnan(s["before"])   # norm_pre alone
        assert (s["after"] == pytest.approx(0.7)) if block < 3 else math.isnan(s["after"])     # blocks.3 alone


def test_split_contrast_brute_force_with_nan():
    names = vit_names(3)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.1, 1.0, (len(names), len(names)))
    m = (x + x.T) / 2
    m[2, 15] = m[15, 2] = np.nan                               # an undefined CKA across the split
    m[3, 5] = m[5, 3] = np.nan                                 # and one within "before"
    before, after = split_layers(names, 1)
    across = [m[i, j] for i in before for j in after if not np.isnan(m[i, j])]
    within_b = [m[i, j] for i in before for j in before if i != j and not np.isnan(m[i, j])]
    within_a = [m[i, j] for i in after for j in after if i != j]
    s = split_summary(torch.tensor(m), names, 1)
    assert s["across"] == pytest.approx(sum(across) / len(across), rel=1e-12)
    assert s["before"] == pytest.approx(sum(within_b) / len(within_b), rel=1e-12)
    assert s["after"] == pytest.approx(sum(within_a) / len(within_a), rel=1e-12)
    assert split_contrast(torch.tensor(m), names, 1) == s["across"]


def test_split_errors():
    names = vit_names(3)
    with pytest.raises(ValueError, match="no layer of block 7"):
        split_layers(names, 7)
    with pytest.raises(ValueError, match="one side"):
        split_contrast(torch.eye(len(names) - 1), names[:-1], 2)   # nothing after the last block without its output
    with pytest.raises(ValueError, match="one side"):
        split_contrast(torch.eye(len(names) - 1), names[1:], 0)   # nothing before block 0 without norm_pre
    with pytest.raises(ValueError, match="does not match"):
        split_contrast(torch.eye(3), names, 1)


def test_ratio_profile_and_summary():
    rng = np.random.default_rng(1)
    r = rng.uniform(0.5, 40.0, (6, 5))                          # 3 blocks x (attn, mlp), CLS + 4 patch tokens
    res = np.array([0.3, 1.7, 0.9, 2.5])
    p = ratio_profile(torch.tensor(r))
    assert torch.allclose(p["depth"], torch.tensor([0, 1, 2, 3, 4, 5], dtype=torch.float64) / 5)
    assert np.allclose(p["cls"].numpy(), r[:, 0]) and np.allclose(p["spatial"].numpy(), r[:, 1:].mean(1))
    s = skip_ratio_summary(torch.tensor(r), torch.tensor(res))
    assert s["cls_ratio_first_half"] == pytest.approx(r[:3, 0].mean())
    assert s["cls_ratio_second_half"] == pytest.approx(r[3:, 0].mean())
    assert s["spatial_ratio_first_half"] == pytest.approx(r[:3, 1:].mean())
    assert s["spatial_ratio_second_half"] == pytest.approx(r[3:, 1:].mean())
    # torch's median of an even count is the lower middle value
    assert s["vit_median_ratio"] == pytest.approx(np.sort(r.ravel())[(r.size - 1) // 2])
    assert s["vit_max_ratio"] == pytest.approx(r.max()) and s["vit_min_ratio"] == pytest.approx(r.min())
    assert s["resnet_max_ratio"] == 2.5 and s["resnet_min_ratio"] == 0.3 and s["resnet_median_ratio"] == 0.9
    gap = skip_ratio_summary(torch.tensor(r), num_prefix_tokens=0)
    assert math.isnan(gap["cls_ratio_first_half"]) and "resnet_max_ratio" not in gap
    assert gap["spatial_ratio_first_half"] == pytest.approx(r[:3].mean())
    assert ratio_profile(torch.tensor(r), 0)["cls"] is None
    assert torch.allclose(normalised_depth(4), torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64))
    assert torch.equal(normalised_depth(1), torch.zeros(1, dtype=torch.float64))


def test_removed_blocks(tiny_vit, tiny_resnet):
    assert removed_blocks(build_vit(embed_dim=16, depth=4, num_heads=2, no_skip_blocks=[1, 3])) == [1, 3]
    assert removed_blocks(tiny_vit) == [] and removed_blocks(tiny_resnet) == []


def test_model_accuracies(tiny_vit):
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        pred = tiny_vit(normalize(images)).argmax(-1)
    labels = pred.clone()
    labels[:3] = (labels[:3] + 1) % 10                          # exactly 7 of 10 right
    acc = model_accuracies({"a": tiny_vit}, [(images[:4], labels[:4]), (images[4:], labels[4:])])
    assert acc == {"a": pytest.approx(0.7)}


def test_no_skip_comparison():
    names = vit_names(3)
    intact = part_matrix(names, 1, before=0.9, after=0.9, across=0.8)
    cut = part_matrix(names, 1, before=0.85, after=0.75, across=0.15)
    z = torch.zeros(len(names), len(names), dtype=torch.float64)
    heat = Heatmaps({"intact": names, "ns1": names}, torch.cat([torch.cat([intact, z], 1), torch.cat([z, cut], 1)]), 64)
    model = build_vit(embed_dim=16, depth=3, num_heads=2, no_skip_blocks=[1])
    intact_model = build_vit(embed_dim=16, depth=3, num_heads=2)
    recipe = {"batch_size": 128}
    intact_model.zoo_entry = {"epochs": 10, "train_images": 60000, "recipe": recipe, "test_accuracy": 0.87}
    model.zoo_entry = {"epochs": 3, "train_images": 60000, "recipe": recipe, "test_accuracy": 0.84}
    assert optimisation_steps(model.zoo_entry) == 3 * 469
    (row,) = no_skip_comparison(heat, "intact", {"ns1": model}, {"intact": 0.9, "ns1": 0.85}, intact_model)
    assert row["label"] == "ns1" and row["block"] == 1 and row["depth_fraction"] == 0.5
    assert row["split_cka_intact"] == pytest.approx(0.8) and row["split_cka_no_skip"] == pytest.approx(0.15)
    assert row["within_before_no_skip"] == pytest.approx(0.85) and row["within_after_no_skip"] == pytest.approx(0.75)
    assert row["accuracy_drop"] == pytest.approx(0.05)
    assert row["epochs_intact"] == 10 and row["epochs_no_skip"] == 3 and row["steps_fraction"] == pytest.approx(0.3)
    assert row["test_accuracy_intact"] == 0.87 and row["test_accuracy_no_skip"] == 0.84
    del model.zoo_entry                                        # untrained (arch:) models: no manifest numbers
    (row,) = no_skip_comparison(heat, "intact", {"ns1": model}, {"intact": 0.9, "ns1": 0.85})
    assert row["epochs_no_skip"] is None and row["steps_fraction"] is None and row["test_accuracy_intact"] is None
    with pytest.raises(ValueError, match="exactly one block"):
        no_skip_comparison(heat, "intact", {"ns1": intact_model}, {"intact": 0.9, "ns1": 0.85})

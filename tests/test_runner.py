"""The one forward loop (vitcnn_utils.runner): shared captures, execution order, and no leaked grad mode."""
import torch

from vitcnn_utils.data import preprocessor
from vitcnn_utils.hooks import capture
from vitcnn_utils.runner import features, forward_passes, mean_over_images


def _batches(n=12, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return [(images[i:i + size], torch.arange(i, i + size)) for i in range(0, n, size)]


def test_features_equal_a_plain_capture_of_the_preprocessed_images(tiny_vit):
    batches = _batches()
    for (feats, labels), (images, expected_labels) in zip(features(tiny_vit, batches, ["blocks.1", ":in"]), batches):
        reference = capture(tiny_vit, preprocessor(tiny_vit)(images), ["blocks.1"])
        assert torch.equal(feats["blocks.1"], reference["blocks.1"])
        assert torch.equal(feats[":in"], preprocessor(tiny_vit)(images))      # ":in": the images the model saw
        assert torch.equal(labels, expected_labels)


def test_one_model_under_two_names_runs_once_and_each_name_gets_its_layers(tiny_vit):
    calls = []
    handle = tiny_vit.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        out = list(forward_passes({"a": tiny_vit, "b": tiny_vit}, _batches(), {"a": ["blocks.1", "blocks.0"],
                                                                            "b": ["blocks.1"]}))
    finally:
        handle.remove()
    assert len(calls) == 3                                              # one pass per minibatch, not two
    captured, _ = out[0]
    assert list(captured["a"]) == ["blocks.0", "blocks.1"]              # execution order, not request order
    assert list(captured["b"]) == ["blocks.1"] and captured["a"]["blocks.1"] is captured["b"]["blocks.1"]


def test_interleaved_loops_leave_the_callers_grad_mode_alone(tiny_vit, tiny_resnet):
    assert torch.is_grad_enabled()
    for (fa, _), (fb, _) in zip(features(tiny_vit, _batches(), "blocks.0"), features(tiny_resnet, _batches(), "layer1.0")):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert not fa["blocks.0"].requires_grad
    first = next(features(tiny_vit, _batches(), "blocks.0"))            # a loop abandoned after one minibatch
    del first
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_mean_over_images_weights_minibatches_by_their_size(tiny_vit):
    uneven = _batches(n=12, size=8)                                     # minibatches of 8 and 4 images
    mean, n = mean_over_images(tiny_vit, uneven, "blocks.0", lambda f: f["blocks.0"].double().mean((1, 2)))
    images = torch.cat([x for x, _ in uneven])
    reference = capture(tiny_vit, preprocessor(tiny_vit)(images), "blocks.0")["blocks.0"].double().mean((1, 2))
    assert n == 12 and abs(mean.item() - reference.mean().item()) < 1e-12

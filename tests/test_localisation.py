"""Token–patch CKA, patches, effective receptive fields, head-subset CKA: against brute force."""
import torch

from vitcnn_utils.measure import attention_distances, head_subset_cka
from vitcnn_utils.cka import linear_cka
from vitcnn_utils.data import normalize
from vitcnn_utils.hooks import capture
from vitcnn_utils.chapters.spatial import localisation_summary
from vitcnn_utils.localisation import image_patches
from vitcnn_utils.measure import effective_receptive_field, token_patch_cka


def _patch_embedder():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, kernel_size=4, stride=4)).eval()
    model.vitcnn_input = "fashion-mnist"
    return model


def _images(n, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_image_patches_brute_force():
    x = torch.randn(2, 3, 8, 12)
    patches = image_patches(x, 4)
    assert patches.shape == (2, 6, 48)
    for r in range(2):
        for c in range(3):
            assert torch.equal(patches[:, r * 3 + c], x[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(2, -1))


def test_patch_embedding_tokens_localise_perfectly():
    model, images = _patch_embedder(), _images(96)
    matrix = token_patch_cka(model, [(images[:48], None), (images[48:], None)], "0", 4, (7, 7))
    assert matrix.shape == (49, 49)
    summary = localisation_summary(matrix, (7, 7))
    assert summary["own_patch_is_best"] == 1.0 and summary["interior_own_patch_is_best"] == 1.0
    assert summary["mean_own"] > 0.4 and abs(summary["mean_other"]) < 0.05   # 16 -> 8 random linear map
    # one entry against linear_cka on the same (single-batch) data
    single = token_patch_cka(model, [(images, None)], "0", 4, (7, 7))
    x = normalize(images)
    tokens = model(x).detach().flatten(2).transpose(1, 2)
    assert abs(single[10, 17].item() - linear_cka(tokens[:, 10], image_patches(x, 4)[:, 17], unbiased=True)) < 1e-9


def test_erf_of_a_3x3_convolution_is_its_footprint():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, kernel_size=3, padding=1)).eval()
    model.vitcnn_input = "fashion-mnist"
    erf = effective_receptive_field(model, _images(4).float() / 255, "0", (28, 28))
    support = torch.nonzero(erf > 0)
    assert erf.shape == (28, 28) and erf.max().item() == 1.0
    assert support[:, 0].unique().tolist() == [13, 14, 15] and support[:, 1].unique().tolist() == [13, 14, 15]


def test_vit_erf_and_head_subsets(tiny_vit, tiny_resnet):
    images = _images(32, seed=1)
    erf = effective_receptive_field(tiny_vit, images[:8], "blocks.1", (7, 7), num_prefix_tokens=1)
    assert erf.shape == (28, 28) and (erf > 0).float().mean() > 0.9      # attention mixes all patches
    batches = [(images[:16], None), (images[16:], None)]
    result = head_subset_cka(tiny_vit, tiny_resnet, batches, ["layer1.0", "layer2.0"], block=0, subset_size=2)
    distances, _ = attention_distances(tiny_vit, batches)
    order = torch.argsort(distances[0]).tolist()
    assert result["heads"] == [order[0:2], order[1:3], order[2:4]]
    assert torch.all(result["distance"][1:] >= result["distance"][:-1])
    # brute force for the first subset and layer: slice the heads out of attn.proj's input by hand
    with torch.no_grad():
        out = capture(tiny_vit, normalize(images), "blocks.0.attn.proj:in")["blocks.0.attn.proj:in"][:, 1:]
        heads = out.unflatten(-1, (4, -1))[:, :, order[0:2]]
        res = capture(tiny_resnet, normalize(images), "layer1.0")["layer1.0"]
    from vitcnn_utils.cka import MinibatchCKA
    ref = MinibatchCKA()
    ref.update([heads[:16]], [res[:16]])
    ref.update([heads[16:]], [res[16:]])
    assert abs(result["cka"][0, 0].item() - ref.compute().item()) < 1e-10


def test_erf_radius():
    from vitcnn_utils.localisation import erf_radius
    erf = torch.zeros(9, 9, dtype=torch.float64)
    erf[4, 4] = 1.0
    assert erf_radius(erf) == 0.0
    erf[4, 7] = 1.0                       # half of the mass 3 px from the centre
    assert erf_radius(erf) == 0.0 and erf_radius(erf, 0.75) == 3.0

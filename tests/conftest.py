import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never wait for the hub in tests
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from vitcnn_utils.architectures import build_resnet, build_vit  # noqa: E402


@pytest.fixture(scope="session")
def tiny_vit():
    torch.manual_seed(0)
    return build_vit(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, pool="cls").eval()


@pytest.fixture(scope="session")
def tiny_vit_gap():
    torch.manual_seed(1)
    return build_vit(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, pool="gap").eval()


@pytest.fixture(scope="session")
def tiny_resnet():
    torch.manual_seed(2)
    model = build_resnet(layers=(1, 1, 1, 1), channels=(4, 8, 8, 8)).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so bn outputs differ from conv outputs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model


@pytest.fixture
def images():
    return torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def perturbed_copy(model, scale, seed):
    """A copy of ``model`` with Gaussian noise (``scale`` × each weight matrix's SD) on its weight matrices: a
    stand-in for another trained model of the same architecture."""
    import copy
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            if p.ndim > 1:
                p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))
    return other


@pytest.fixture
def gram_dtypes(monkeypatch):
    """The ``gram_dtype`` of every :class:`~vitcnn_utils.cka.MinibatchCKA` made while the test runs, in order: a
    chapter's ``gram_dtype`` parameter must reach each CKA it computes."""
    from vitcnn_utils import cka
    made, init = [], cka.MinibatchCKA.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self.gram_dtype)
    monkeypatch.setattr(cka.MinibatchCKA, "__init__", recording)
    return made

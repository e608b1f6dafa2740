"""Per-model Grams computed once and shared by heatmaps (measure.model_grams, measure.heatmaps_from_grams), the
in-process store that keeps them (cache.MemoryStore) and the data-scale chapter's use of both: the same bits
as computing every heatmap from the models."""

import pytest
from conftest import perturbed_copy
import torch

from vitcnn_utils import cache, measure
from vitcnn_utils import data as vdata
from vitcnn_utils.chapters import data_scale
from vitcnn_utils.chapters.params import DrawImages
from vitcnn_utils.chapters.data_scale import FULL, MATCHED, OTHER, SEED


def _batches(n=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return [(images[i:i + size], None) for i in range(0, n, size)]


def _perturbed(model, seed, scale=0.3):
    return perturbed_copy(model, scale, seed)


def _same(a, b):
    assert a.names == b.names and a.n_images == b.n_images
    assert torch.equal(a.matrix, b.matrix)


@pytest.fixture(scope="module")
def vits(tiny_vit):
    return {"a": tiny_vit, "b": _perturbed(tiny_vit, 1), "c": _perturbed(tiny_vit, 2)}


def test_heatmaps_from_grams_are_the_bits_of_block_heatmaps(vits, tiny_resnet):
    batches = _batches()
    grams = {k: measure.block_grams(m, batches) for k, m in vits.items()}
    _same(measure.heatmaps_from_grams(grams), measure.block_heatmaps(vits, batches, progress=False))
    # a subgroup, in another order, from the same Grams: still the plain call's bits
    sub = {"c": vits["c"], "a": vits["a"]}
    _same(measure.heatmaps_from_grams({k: grams[k] for k in sub}), measure.block_heatmaps(sub, batches, progress=False))
    resnets = {"r": tiny_resnet, "s": _perturbed(tiny_resnet, 3)}
    _same(measure.heatmaps_from_grams({k: measure.block_grams(m, batches) for k, m in resnets.items()}),
          measure.block_heatmaps(resnets, batches, progress=False))


def test_model_grams_with_default_layers_give_model_heatmaps(vits):
    batches = _batches()
    grams = {k: measure.model_grams(m, batches) for k, m in vits.items()}
    _same(measure.heatmaps_from_grams(grams), measure.model_heatmaps(vits, batches, progress=False))


def test_grams_are_read_not_modified(vits):
    grams = {k: measure.block_grams(m, _batches()) for k, m in vits.items()}
    before = {k: [{layer: g.matrix.clone() for layer, g in per.items()} for per in batch] for k, batch in grams.items()}
    first = measure.heatmaps_from_grams(grams)
    for k, batch in grams.items():
        for per, saved in zip(batch, before[k]):
            assert all(torch.equal(per[layer].matrix, saved[layer]) for layer in per)
    _same(measure.heatmaps_from_grams(grams), first)


def test_grams_of_different_minibatches_are_refused(vits):
    with pytest.raises(ValueError, match="same minibatches"):
        measure.heatmaps_from_grams({"a": measure.block_grams(vits["a"], _batches(16)),
                                     "b": measure.block_grams(vits["b"], _batches(24))})


# -- cache.MemoryStore ---------------------------------------------------------------------------------------
def test_memory_store_returns_the_stored_object_and_recomputes_for_another_spec(monkeypatch):
    store, calls = cache.MemoryStore(max_bytes=10_000), []

    def compute(value):
        return lambda: calls.append(value) or [torch.full((4,), float(value))]

    first = store.get({"model": "a", "seed": 0}, compute(1))
    assert store.get({"seed": 0, "model": "a"}, compute(2)) is first and calls == [1]
    assert store.get({"model": "a", "seed": 1}, compute(3))[0][0] == 3 and calls == [1, 3]
    monkeypatch.setattr(cache, "code_version", lambda: "other code")
    assert store.get({"model": "a", "seed": 0}, compute(4))[0][0] == 4 and calls == [1, 3, 4]


def test_memory_store_evicts_the_least_recently_used_beyond_its_bytes():
    store = cache.MemoryStore(max_bytes=3 * 800)                       # three float64 (100,) tensors
    values = {k: torch.zeros(100, dtype=torch.float64) for k in "abcd"}
    for k in "abc":
        store.get({"k": k}, lambda k=k: values[k])
    store.get({"k": "a"}, lambda: pytest.fail("'a' is stored"))          # 'a' is now the most recent
    store.get({"k": "d"}, lambda: values["d"])                          # evicts 'b', the least recent
    assert len(store) == 3 and store.nbytes == 2400
    calls = []
    store.get({"k": "b"}, lambda: calls.append("b") or values["b"])
    assert calls == ["b"]
    big = cache.MemoryStore(max_bytes=100)
    assert big.get({"k": "x"}, lambda: values["a"]) is values["a"] and len(big) == 0 and big.nbytes == 0
    assert cache.tensor_bytes({"m": [measure.MinibatchCKA().gram(torch.ones(4, 3))]}) == 4 * 4 * 8 + 1 + 8


# -- the data-scale chapter ----------------------------------------------------------------------------------
@pytest.fixture
def counted(monkeypatch):
    """A fresh, empty GRAM_STORE, and the models whose block Grams were computed."""
    monkeypatch.setattr(data_scale, "GRAM_STORE", cache.MemoryStore(max_bytes=2 ** 30))
    calls = []
    grams = measure.block_grams
    monkeypatch.setattr(measure, "block_grams", lambda model, *a, **k: calls.append(model) or grams(model, *a, **k))
    return calls


def test_chapter_grams_keyed_by_everything_they_depend_on(counted, vits, monkeypatch):
    batches = _batches()
    key = {"data": "d", "seed": 0, "image_size": None, "batch": 8, "n": 16}
    images = DrawImages(lambda: batches, key)
    memo = {}
    first = data_scale._block_grams(vits["a"], images, "cpu", "float64", memo)
    assert data_scale._block_grams(vits["a"], images, "cpu", "float64", memo) is first and len(counted) == 1
    assert data_scale._block_grams(vits["a"], images, "cpu", "float64", {}) is first and len(counted) == 1  # the store
    for changed in ({**key, "seed": 1}, {**key, "data": "e"}, {**key, "n": 8}, {**key, "batch": 4},
                    {**key, "image_size": 32}):
        other_images = DrawImages(lambda: batches, changed)
        assert data_scale._block_grams(vits["a"], other_images, "cpu", "float64", memo) is not first
    assert len(counted) == 6
    data_scale._block_grams(vits["b"], images, "cpu", "float64", memo)                  # other weights
    assert len(counted) == 7
    in_float32 = data_scale._block_grams(vits["a"], images, "cpu", "float32", memo)     # other Gram precision
    assert len(counted) == 8 and in_float32 is not first
    assert not torch.equal(in_float32[0]["blocks.0"].matrix, first[0]["blocks.0"].matrix)
    key = cache.call_key(measure.block_grams, vits["a"], images, device="cpu")
    previous = getattr(vits["a"], "vitcnn_input", None)
    monkeypatch.setattr(vits["a"], "vitcnn_input", "imagenet", raising=False)             # other preprocessing
    assert cache.call_key(measure.block_grams, vits["a"], images, device="cpu") != key
    monkeypatch.setattr(vits["a"], "vitcnn_input", previous, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    data_scale._block_grams(vits["a"], images, "cpu", "float64", memo)
    assert len(counted) == 9
    monkeypatch.setattr(cache, "code_version", lambda: "other code")
    data_scale._block_grams(vits["a"], images, "cpu", "float64", {})
    assert len(counted) == 10


def test_chapter_computes_each_model_once_per_draw_and_reuses_them_in_a_second_run(counted, vits, tiny_resnet):
    vit = {"3%": vits["b"], FULL: vits["a"], MATCHED: vits["c"], SEED: _perturbed(vits["a"], 4),
           OTHER: _perturbed(vits["c"], 5)}
    resnet = {"3%": _perturbed(tiny_resnet, 6), FULL: tiny_resnet}
    args = dict(vit=vit[FULL], vit_matched=vit[MATCHED], resnet=resnet[FULL], vit_seed=vit[SEED],
                vit_matched_seed=vit[OTHER], vit_fractions={"3%": vit["3%"]}, resnet_fractions={"3%": resnet["3%"]},
                n_draws=1, use_cache=False, n_images=16, batch_size=8, shots=2, val_per_class=2, n_test=16)
    first = data_scale.run(**args)
    assert len(counted) == len(vit) + len(resnet) and len({id(m) for m in counted}) == len(counted)
    batches = vdata.analysis_batches("fashion-mnist", 16, 8, seed=0)
    plain = data_scale.matched_layer_cka(
        measure.block_heatmaps({k: vit[k] for k in ("3%", FULL, MATCHED)}, batches, progress=False), FULL)
    assert torch.equal(first.cka["vit_long"]["3%"][0], plain["3%"])
    again = data_scale.run(**args)
    assert len(counted) == len(vit) + len(resnet)                       # all from the store
    for ref, per in first.cka.items():
        assert all(torch.equal(v, again.cka[ref][label]) for label, v in per.items())


def test_heatmaps_with_accuracy_is_both_plain_calls_from_one_pass(vits, monkeypatch):
    """The skip chapter's one pass: the heatmaps' bits and train.model_accuracies' values, a model under two names
    run once (its accuracy given to both)."""
    from vitcnn_utils import runner
    from vitcnn_utils.train import model_accuracies
    batches = vdata.analysis_batches("fashion-mnist", 32, 8, seed=0)
    models = {"a": vits["a"], "b": vits["b"], "a again": vits["a"]}
    passes = []
    real = runner.forward_passes
    monkeypatch.setattr(measure, "forward_passes", lambda *a, **k: passes.append(1) or real(*a, **k))
    heatmaps, accuracy = measure.heatmaps_with_accuracy(models, batches, progress=False)
    assert len(passes) == 1
    monkeypatch.setattr(measure, "forward_passes", real)
    _same(heatmaps, measure.model_heatmaps(models, batches, progress=False))
    assert accuracy == model_accuracies(models, batches) and accuracy["a again"] == accuracy["a"]
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())

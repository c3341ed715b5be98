"""实验 2.A 的工具（clipedu.labs.transfer）：分层抽标注、线性探针、下游任务与四种做法的对照。"""
import pytest
import torch

import clipedu
from clipedu.data.shapes import ShapesDataset
from clipedu.labs.transfer import (ATTRIBUTES, METHODS, ImageClassifier, features, few_label_comparison,
                                   few_label_indices, linear_probe, shapes_attribute_task)


def test_few_label_indices_is_stratified_and_seeded():
    y = torch.arange(60) % 3                                   # 3 类，各 20 个
    idx = few_label_indices(y, 4, seed=1)
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    assert torch.bincount(y[idx], minlength=3).tolist() == [4, 4, 4]
    assert torch.equal(idx, few_label_indices(y, 4, seed=1))
    assert not torch.equal(idx, few_label_indices(y, 4, seed=2))


def test_few_label_indices_rejects_bad_counts():
    y = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="per_class too large"):
        few_label_indices(y, 2)
    with pytest.raises(ValueError, match="per_class"):
        few_label_indices(y, 0)


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    F = torch.nn.functional.one_hot(y, 4).float() * 5 + 0.1 * torch.randn(200, 4, generator=g)
    assert linear_probe(F[:100], y[:100], F[100:], y[100:]) == 1.0
    assert linear_probe(F[:100], y[:100], F[100:], y[100:], per_class=1) == 1.0
    # 特征与标签无关时只能猜：4 类的准确率远低于 1
    noise = torch.randn(200, 4, generator=g)
    assert linear_probe(noise[:100], y[:100], noise[100:], y[100:]) < 0.6


@pytest.mark.parametrize("attribute", list(ATTRIBUTES))
def test_shapes_attribute_task_labels_match_objects(attribute):
    X, y, names = shapes_attribute_task(attribute, 40, seed=3)
    ds = ShapesDataset("test", size=40, seed=3)
    k = ATTRIBUTES[attribute][0]
    assert X.shape == (40, 3, 32, 32) and names == list(ATTRIBUTES[attribute][1])
    assert y.tolist() == [ds.objects(i)[0][k] for i in range(40)]
    assert torch.equal(X, ds.get_batch(range(40))[0])


def test_shapes_attribute_task_rejects_unknown_attribute():
    with pytest.raises(ValueError, match="unknown attribute"):
        shapes_attribute_task("纹理", 10)


def test_image_classifier_and_features_shapes():
    torch.manual_seed(0)
    model = clipedu.create_model("tiny-cpu")
    x = torch.randn(5, 3, 32, 32)
    assert ImageClassifier(model, 6)(x).shape == (5, 6)
    F = features(model, x, batch_size=2)
    assert F.shape == (5, model.config.embed_dim) and F.device.type == "cpu"
    torch.testing.assert_close(F.norm(dim=-1), torch.ones(5))


@pytest.mark.slow
def test_few_label_comparison_runs_all_methods_without_touching_the_model():
    torch.manual_seed(0)
    model = clipedu.create_model("tiny-cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X, y, _ = shapes_attribute_task("形状", 48, seed=0)
    res = few_label_comparison(model, (X[:24], y[:24], X[24:], y[24:]), per_class=1, seeds=[0, 1], steps=2)
    assert list(res) == list(METHODS)
    assert all(len(v) == 2 and all(0.0 <= a <= 1.0 for a in v) for v in res.values())
    for k, v in model.state_dict().items():                  # 微调用的是副本
        assert torch.equal(v, before[k]), k

"""零样本与检索指标与暴力计算一致（第 3 章 sec-zero-shot、第 6 章 sec-retrieval）。"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipedu import ChineseTokenizer, retrieval_metrics, zero_shot_accuracy, zero_shot_classifier


def _brute_force(img, txt, t2i_idx, ks=(1, 5, 10)):
    """用 numpy 完整排序的参考实现（一图多文：任一正确标题进入前 k 即命中）。"""
    S = img @ txt.T
    out = {}
    ranks = []
    for i in range(S.shape[0]):
        pos = np.where(t2i_idx == i)[0]
        if len(pos) == 0:
            continue
        order = np.argsort(-S[i], kind="stable")
        ranks.append(min(np.where(np.isin(order, pos))[0]) + 1)
    ranks = np.array(ranks, float)
    for k in ks:
        out[f"i2t_R@{k}"] = (ranks <= k).mean()
    out["i2t_mean_rank"], out["i2t_median_rank"] = ranks.mean(), np.median(ranks)
    ranks = []
    for t in range(S.shape[1]):
        order = np.argsort(-S[:, t], kind="stable")
        ranks.append(np.where(order == t2i_idx[t])[0][0] + 1)
    ranks = np.array(ranks, float)
    for k in ks:
        out[f"t2i_R@{k}"] = (ranks <= k).mean()
    out["t2i_mean_rank"], out["t2i_median_rank"] = ranks.mean(), np.median(ranks)
    return out


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_retrieval_matches_brute_force_with_multiple_captions(chunk):
    g = torch.Generator().manual_seed(0)
    Ni, D = 40, 16
    t2i = torch.cat([torch.arange(Ni), torch.randint(0, Ni - 3, (50,), generator=g)])  # 最后 3 张图之外都有多条标题
    img = F.normalize(torch.randn(Ni, D, generator=g), dim=-1)
    txt = F.normalize(img[t2i] + 0.8 * torch.randn(len(t2i), D, generator=g), dim=-1)
    got = retrieval_metrics(img, txt, t2i, chunk_size=chunk)
    ref = _brute_force(img.double().numpy(), txt.double().numpy(), t2i.numpy())
    assert set(got) == set(ref)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-6), k
    # 只要一条标题进前 k 就算命中，R@k 单调不减
    assert got["i2t_R@1"] <= got["i2t_R@5"] <= got["i2t_R@10"]


def test_retrieval_perfect_and_one_to_one_default():
    e = torch.eye(12)
    m = retrieval_metrics(e, e)
    assert m["i2t_R@1"] == m["t2i_R@1"] == 1.0 and m["t2i_median_rank"] == 1.0


def test_retrieval_errors():
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_metrics(torch.randn(3, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="取值"):
        retrieval_metrics(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 3]))


def test_zero_shot_accuracy_by_hand():
    classifier = torch.eye(3)                         # D = C = 3
    feats = torch.tensor([[1., 0, 0], [0, 1, 0], [0, 0.4, 0.6], [0.9, 0.1, 0]])
    labels = torch.tensor([0, 1, 1, 2])               # 第 3、4 个分错
    m = zero_shot_accuracy(feats, labels, classifier, topk=(1, 2))
    assert m["top1"] == pytest.approx(0.5)
    assert m["top2"] == pytest.approx(0.75)           # 第 3 个在前 2；第 4 个的类 2 排第 3
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0.5 + 0) / 3)


class _BagOfCharsModel(torch.nn.Module):
    """一个可手算的“文本塔”：文本向量 = 各字符 one-hot 之和，用来检验模板集成的做法。"""

    def __init__(self, vocab_size):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.V = vocab_size

    def encode_text(self, tokens, normalize=True):
        x = F.one_hot(tokens, self.V).float().sum(1)
        x[:, :4] = 0  # 忽略特殊符号
        return F.normalize(x, dim=-1) if normalize else x


def test_zero_shot_classifier_normalise_mean_normalise():
    tok = ChineseTokenizer()
    model = _BagOfCharsModel(tok.vocab_size)
    W = zero_shot_classifier(model, tok, ["猫", "狗"], ["{}", "一只{}"])
    assert W.shape == (tok.vocab_size, 2)
    torch.testing.assert_close(W.norm(dim=0), torch.ones(2))
    a = F.normalize(model.encode_text(tok(["猫"])), dim=-1)[0]
    b = F.normalize(model.encode_text(tok(["一只猫"])), dim=-1)[0]
    torch.testing.assert_close(W[:, 0], F.normalize((a + b) / 2, dim=0))
    with pytest.raises(ValueError, match="占位符"):
        zero_shot_classifier(model, tok, ["猫"], ["没有占位符"])


def test_eval_mode_restores_training_state_and_disables_grad(tiny_model):
    from clipedu import eval_mode
    tiny_model.train()
    with eval_mode(tiny_model):
        assert not tiny_model.training and not torch.is_grad_enabled()
    assert tiny_model.training and torch.is_grad_enabled()
    tiny_model.eval()
    with eval_mode(tiny_model):
        pass
    assert not tiny_model.training


def test_classification_driver_matches_metric_functions(tiny_model, data):
    """evaluate_classification 只是把 zero_shot_classifier、encode_dataset 与
    zero_shot_accuracy 接起来：结果与手工逐步调用相同。"""
    from clipedu import encode_dataset, evaluate_classification
    from clipedu.prompts import TEMPLATES
    tok = ChineseTokenizer(context_length=16)
    ds = torch.utils.data.Subset(data, range(40))
    got = evaluate_classification(tiny_model, tok, ds, data.classnames, TEMPLATES[:2])
    clf = zero_shot_classifier(tiny_model, tok, data.classnames, TEMPLATES[:2])
    feats, labels = encode_dataset(tiny_model, ds)
    want = zero_shot_accuracy(feats, labels, clf)
    assert got["zero_shot_top1"] == want["top1"] and got["zero_shot_n"] == 40

"""融合模型：形状、填充掩码、索引/查询拆分、能学会一个必须同时看图和问题的小任务。"""
import pytest
import torch

from clipedu.labs.fusion import (
    FUSION_MODELS, EarlyFusion, FusionConfig, HybridFusion, LateFusion, TextOnlyBaseline, fit_classifier,
    predict, query_cost,
)
from clipedu.tokenizer import ChineseTokenizer

SMALL = FusionConfig(image_size=16, patch_size=4, width=32, heads=2, layers=1, context_length=12, num_answers=2)
tok = ChineseTokenizer()


def _nonzero_init(model):
    torch.manual_seed(0)
    for p in model.parameters():  # 默认初始化下有些输出接近 0，比较才不会"偶然相等"
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
    return model.eval()


@pytest.mark.parametrize("name", ["early", "late", "hybrid", "text-only"])
def test_shapes_and_index_split(name):
    model = _nonzero_init(FUSION_MODELS[name](SMALL))
    images, tokens = torch.randn(3, 3, 16, 16), tok(["图中有红色的圆形吗？", "三角形是什么颜色？", "是"], 12)
    logits = model(images, tokens)
    assert logits.shape == (3, 2)
    index = model.index_images(images)
    expect = {"early": (3, 16, 32), "late": (3, 32), "hybrid": (3, 16, 32), "text-only": (3, 0)}[name]
    assert index.shape == expect
    torch.testing.assert_close(model.answer(index, tokens), logits)
    # 一个问题对一批图：(1, L) 的 tokens 会广播到每张图
    one = tokens[:1]
    torch.testing.assert_close(model.answer(index, one), model.answer(index, one.expand(3, -1)))


@pytest.mark.parametrize("name", ["early", "late", "hybrid", "text-only"])
def test_padding_is_masked(name):
    # 同一个问题多补几个 [PAD]，输出必须完全不变——否则填充位置在"偷偷"参与注意力
    model = _nonzero_init(FUSION_MODELS[name](SMALL))
    images = torch.randn(2, 3, 16, 16)
    short = tok(["有圆形吗？", "红色？"], 8)
    long = tok(["有圆形吗？", "红色？"], 12)
    torch.testing.assert_close(model(images, short), model(images, long), atol=1e-5, rtol=1e-4)
    # 反过来，改一个真正的词元，输出应当改变
    other = tok(["有方形吗？", "红色？"], 12)
    assert (model(images, other)[0] - model(images, long)[0]).abs().max() > 1e-4


def test_images_matter_except_for_text_only():
    images, tokens = torch.randn(2, 3, 16, 16), tok(["有圆形吗？"] * 2, 12)
    for name, cls in FUSION_MODELS.items():
        model = _nonzero_init(cls(SMALL))
        diff = (model(images, tokens)[0] - model(images, tokens)[1]).abs().max()
        assert (diff < 1e-6) if name == "text-only" else (diff > 1e-4), name


def test_bad_inputs_raise():
    model = EarlyFusion(SMALL)
    with pytest.raises(ValueError, match="图像形状"):
        model(torch.randn(2, 3, 32, 32), tok(["是"], 12).expand(2, -1))
    with pytest.raises(ValueError, match="context_length"):
        model(torch.randn(2, 3, 16, 16), tok(["是", "否"], 20))
    with pytest.raises(ValueError, match="patch_size"):
        LateFusion(FusionConfig(image_size=16, patch_size=3))
    with pytest.raises(ValueError, match="样本数"):
        fit_classifier(model, (torch.randn(4, 3, 16, 16), tok(["是"] * 3, 12)), torch.zeros(4, dtype=torch.long))


def _colour_task(n, seed):
    """纯色图（红 / 蓝 / 绿）+ 问"是X色吗？"，答案"是/否"各半：只看图或只看问题都只能猜。"""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.tensor([[1.0, -1, -1], [-1, -1, 1.0], [-1, 1.0, -1]])
    names = ["红", "蓝", "绿"]
    colour = torch.randint(0, 3, (n,), generator=g)
    yes = torch.rand(n, generator=g) < 0.5
    asked = torch.where(yes, colour, (colour + torch.randint(1, 3, (n,), generator=g)) % 3)
    images = rgb[colour][:, :, None, None].expand(n, 3, 16, 16) + 0.3 * torch.randn(n, 3, 16, 16, generator=g)
    tokens = tok([f"是{names[a]}色吗？" for a in asked.tolist()], 12)
    return images, tokens, (~yes).long()  # 0 = 是，1 = 否


@pytest.mark.slow
@pytest.mark.parametrize("name", ["early", "late", "hybrid"])
def test_fusion_models_learn_a_task_that_needs_both_modalities(name):
    train, test = _colour_task(512, 0), _colour_task(256, 1)
    torch.manual_seed(0)
    model = FUSION_MODELS[name](SMALL)
    fit_classifier(model, train[:2], train[2], steps=250, batch_size=64, lr=3e-3, seed=0)
    acc = (predict(model, test[:2]) == test[2]).float().mean().item()
    assert acc > 0.9, (name, acc)


@pytest.mark.slow
def test_text_only_baseline_stays_at_chance():
    train, test = _colour_task(512, 0), _colour_task(256, 1)
    torch.manual_seed(0)
    model = TextOnlyBaseline(SMALL)
    hist = fit_classifier(model, train[:2], train[2], steps=150, batch_size=64, lr=3e-3, seed=0)
    acc = (predict(model, test[:2]) == test[2]).float().mean().item()
    assert 0.35 < acc < 0.65, acc
    assert hist[-1]["loss"] > 0.6  # 学不到低于 ln 2 ≈ 0.69 太多的损失


def test_query_cost_orders_the_models():
    images, one = torch.randn(64, 3, 16, 16), tok(["有圆形吗？"], 12)
    costs = {n: query_cost(FUSION_MODELS[n](SMALL), images, one, batch_size=32) for n in ("early", "late", "hybrid")}
    for c in costs.values():
        assert set(c) == {"index_seconds", "query_seconds", "query_gflops"}
    # 晚期融合的查询只剩一次文本编码 + MLP；早期融合要对每对重跑整个 Transformer
    assert costs["late"]["query_gflops"] < costs["hybrid"]["query_gflops"] < costs["early"]["query_gflops"]
    with pytest.raises(ValueError, match="一个问题"):
        query_cost(LateFusion(SMALL), images, tok(["是", "否"], 12))

"""对比学习式梯度累积（第 5 章 sec-code-accum）：ViT 与整批一步完全相同，带 BatchNorm 的
ResNet（rn50 的结构）不同，并量出差多少。"""
import pytest
import torch

from clipedu.loss import clip_loss
from clipedu.model import CLIP
from clipedu.precision import build_precision
from clipedu.tokenizer import ChineseTokenizer
from clipedu.trainer import forward_backward
from tiny import tiny_dataset, tiny_model_config, tiny_resnet_config

FP32 = build_precision("fp32", torch.device("cpu"))


def _batch(image_size, n=16):
    images, captions, _ = tiny_dataset(64, image_size=image_size).get_batch(list(range(n)))
    return images, ChineseTokenizer(context_length=16)(captions)


def _loss_and_grads(model, images, tokens, accum_steps):
    model.zero_grad(set_to_none=True)
    loss = forward_backward(model, clip_loss, images, tokens, FP32, accum_steps)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _relative_difference(a: dict, b: dict) -> float:
    """所有梯度拼成一个向量后的相对差 ‖a − b‖ / ‖b‖。"""
    diff = sum(((a[k] - b[k]) ** 2).sum() for k in b).sqrt()
    return (diff / sum((b[k] ** 2).sum() for k in b).sqrt()).item()


def test_vit_accumulation_equals_full_batch():
    torch.manual_seed(0)
    model = CLIP(tiny_model_config())
    images, tokens = _batch(16)
    full, g_full = _loss_and_grads(model, images, tokens, 1)
    acc, g_acc = _loss_and_grads(model, images, tokens, 4)
    assert g_acc.keys() == g_full.keys() and "logit_scale" in g_full
    torch.testing.assert_close(acc, full, rtol=0, atol=1e-6)
    for k in g_full:
        torch.testing.assert_close(g_acc[k], g_full[k], rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{k}: {m}")
    assert _relative_difference(g_acc, g_full) < 1e-5   # 只剩浮点舍入


def test_naive_accumulation_is_not_the_full_batch():
    """朴素累积：每个微批只在自己的 4 个样本里找负样本，损失与梯度都不同。"""
    torch.manual_seed(0)
    model = CLIP(tiny_model_config())
    images, tokens = _batch(16)
    full, g_full = _loss_and_grads(model, images, tokens, 1)
    model.zero_grad(set_to_none=True)
    naive = 0.0
    for im, tk in zip(images.chunk(4), tokens.chunk(4)):
        loss = clip_loss(*model(im, tk)) / 4
        loss.backward()
        naive += loss.item()
    assert abs(naive - full.item()) > 0.1
    g_naive = {n: p.grad for n, p in model.named_parameters()}
    assert _relative_difference(g_naive, g_full) > 0.05


def test_resnet_batchnorm_accumulation_differs_from_full_batch():
    """BatchNorm 用每个微批自己的均值方差，所以 ResNet 的累积不等于整批（ViT 等于）。

    在这个 16 对、K=4（每个微批 4 张图）的小例子上测得：损失差约 0.18，图像塔梯度的
    相对差约 1.3（差别比梯度本身还大）。文本塔没有 BatchNorm，但它的梯度经由图像
    特征也随之改变。
    """
    torch.manual_seed(0)
    model = CLIP(tiny_resnet_config())
    images, tokens = _batch(32)
    full, g_full = _loss_and_grads(model, images, tokens, 1)
    acc, g_acc = _loss_and_grads(model, images, tokens, 4)
    visual = {k: v for k, v in g_full.items() if k.startswith("visual.")}
    rel = _relative_difference({k: g_acc[k] for k in visual}, visual)
    print(f"ResNet K=4：损失差 {abs(acc - full).item():.2e}，图像塔梯度相对差 {rel:.3f}")
    assert abs(acc - full).item() > 1e-2
    assert rel > 0.1
    # 同一个模型在 eval 模式（BatchNorm 用 running 统计量）下累积又是精确的
    model.eval()
    full, g_full = _loss_and_grads(model, images, tokens, 1)
    acc, g_acc = _loss_and_grads(model, images, tokens, 4)
    torch.testing.assert_close(acc, full, rtol=0, atol=1e-6)
    assert _relative_difference(g_acc, g_full) < 1e-4


def test_accumulation_needs_divisible_batch():
    model = CLIP(tiny_model_config())
    images, tokens = _batch(16, n=6)
    with pytest.raises(ValueError, match="不能被 accum_steps=4 整除"):
        forward_backward(model, clip_loss, images, tokens, FP32, 4)

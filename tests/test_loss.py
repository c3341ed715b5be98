"""clip_loss 与手算的 float64 结果、解析梯度和对称性一致（第 4 章 sec-infonce）。"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipedu import ClipLoss, clip_loss


def _features(B=6, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=-1)
    return img, txt


def _by_hand(img, txt, scale):
    """逐元素写出的对称 InfoNCE（numpy float64，不用任何 softmax/交叉熵库函数）。"""
    s = scale * img.numpy() @ txt.numpy().T
    B = s.shape[0]
    i2t = -sum(s[i, i] - math.log(sum(math.exp(s[i, j]) for j in range(B))) for i in range(B)) / B
    t2i = -sum(s[j, j] - math.log(sum(math.exp(s[i, j]) for i in range(B))) for j in range(B)) / B
    return (i2t + t2i) / 2


def test_matches_float64_by_hand():
    img, txt = _features()
    for scale in (1.0, 1 / 0.07, 100.0):
        got = clip_loss(img, txt, torch.tensor(scale, dtype=torch.float64)).item()
        assert got == pytest.approx(_by_hand(img, txt, scale), rel=1e-12)


def test_float32_close_to_float64():
    img, txt = _features()
    got = clip_loss(img.float(), txt.float(), torch.tensor(1 / 0.07)).item()
    assert got == pytest.approx(_by_hand(img, txt, 1 / 0.07), rel=1e-5)


def test_gradient_through_clip_loss_matches_chain_rule():
    img, txt = _features(B=4)
    img.requires_grad_(True)
    scale = 1 / 0.07
    clip_loss(img, txt, torch.tensor(scale, dtype=torch.float64)).backward()
    s = scale * img.detach() @ txt.T
    eye = torch.eye(4, dtype=torch.float64)
    dlogits = (torch.softmax(s, 1) - eye + torch.softmax(s, 0) - eye) / (2 * 4)
    torch.testing.assert_close(img.grad, scale * dlogits @ txt)


def test_symmetric_in_swapping_modalities():
    img, txt = _features()
    scale = torch.tensor(14.3, dtype=torch.float64)
    torch.testing.assert_close(clip_loss(img, txt, scale), clip_loss(txt, img, scale))


def test_perfect_alignment_gives_near_zero_loss():
    img = torch.eye(8, dtype=torch.float64)
    assert clip_loss(img, img.clone(), torch.tensor(100.0, dtype=torch.float64)).item() < 1e-30 + 1e-40 + 1e-12
    # 随机特征、τ=1 时损失接近 log B
    img, txt = _features(B=64, D=256, seed=3)
    assert clip_loss(img, txt, torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(math.log(64), rel=0.05)


def test_cliploss_single_process_equals_clip_loss():
    img, txt = _features()
    scale = torch.tensor(10.0, dtype=torch.float64)
    for local in (False, True):
        torch.testing.assert_close(ClipLoss(local_loss=local)(img, txt, scale), clip_loss(img, txt, scale))


@pytest.mark.parametrize("shapes", [((4, 8), (5, 8)), ((4, 8), (4, 7)), ((8,), (8,))])
def test_bad_shapes_raise_clear_error(shapes):
    a, b = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    with pytest.raises(ValueError, match="特征"):
        clip_loss(a, b, torch.tensor(1.0))


def test_inv_temperature_name_and_old_logit_scale_keyword():
    """第三个参数是逆温度 1/τ；旧关键字 logit_scale= 含义相同，仍然可用。"""
    img, txt = _features()
    inv_t = torch.tensor(1 / 0.07, dtype=torch.float64)
    want = _by_hand(img, txt, 1 / 0.07)
    assert clip_loss(img, txt, inv_temperature=inv_t).item() == pytest.approx(want, rel=1e-12)
    assert clip_loss(img, txt, logit_scale=inv_t).item() == pytest.approx(want, rel=1e-12)
    assert ClipLoss()(img, txt, logit_scale=inv_t).item() == pytest.approx(want, rel=1e-12)
    with pytest.raises(TypeError, match="只能给一个"):
        clip_loss(img, txt, inv_t, logit_scale=inv_t)
    with pytest.raises(TypeError, match="inv_temperature"):
        clip_loss(img, txt)


def test_model_returns_inv_temperature_not_its_log(tiny_model):
    """CLIP.forward 的第三个输出是 exp(logit_scale) = 1/τ，初值 1/0.07 ≈ 14.3。"""
    images = torch.zeros(2, 3, 16, 16)
    tokens = torch.ones(2, 4, dtype=torch.long)
    _, _, inv_t = tiny_model(images, tokens)
    assert inv_t.item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert tiny_model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)

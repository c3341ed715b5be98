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


def test_gradient_wrt_logits_is_softmax_minus_onehot_over_B():
    B = 5
    logits = torch.randn(B, B, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(B)
    F.cross_entropy(logits, labels).backward()
    expected = (torch.softmax(logits.detach(), dim=1) - torch.eye(B, dtype=torch.float64)) / B
    torch.testing.assert_close(logits.grad, expected)

    # 对称损失：两个方向各贡献一半，列方向的 softmax 转置回来
    logits.grad = None
    (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)).div(2).backward()
    eye = torch.eye(B, dtype=torch.float64)
    row = torch.softmax(logits.detach(), dim=1)
    col = torch.softmax(logits.detach(), dim=0)
    torch.testing.assert_close(logits.grad, (row - eye + col - eye) / (2 * B))


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


def test_one_direction_alone_is_not_symmetric():
    """只算图→文的损失在交换模态后会变，这正是 CLIP 取两个方向平均的原因之一。"""
    img, txt = _features()
    s = 14.3 * img @ txt.T
    one_way = F.cross_entropy(s, torch.arange(6))
    other_way = F.cross_entropy(s.T, torch.arange(6))
    assert abs(one_way.item() - other_way.item()) > 1e-3


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

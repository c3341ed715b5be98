"""第 8 章 SigLIP 损失公式：章节里给出的实现 vs float64 逐项手算（见 book/ch08_future.md sec-future-siglip）。"""
import math
import re
from pathlib import Path

import torch

import clipedu.loss

CH08 = Path(__file__).resolve().parents[2] / "book" / "ch08_future.md"


def _chapter_siglip():
    """从第 8 章正文里取出第一个 ``def siglip_loss`` 代码块（8.1 节正文；练习里的副本由练习测试执行）并执行。"""
    blocks = re.findall(r"```python\n(.*?)```", CH08.read_text(encoding="utf-8"), flags=re.S)
    src = [b for b in blocks if "def siglip_loss" in b]
    assert src, "第 8 章应有定义 siglip_loss 的代码块"
    ns: dict = {}
    exec(compile(src[0], str(CH08), "exec"), ns)
    return ns["siglip_loss"]


def _siglip_by_hand(x, y, t_prime, b):
    """公式逐项照抄：-1/B * sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b))，纯 Python float。"""
    B = len(x)
    t = math.exp(t_prime)
    total = 0.0
    for i in range(B):
        for j in range(B):
            dot = sum(a * c for a, c in zip(x[i], y[j]))
            z = 1.0 if i == j else -1.0
            s = z * (t * dot + b)
            total += math.log(1.0 / (1.0 + math.exp(-s)))
    return -total / B


def _features(B, D, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    return x, y


def test_siglip_matches_hand_computation():
    siglip_loss = _chapter_siglip()
    for B, D, t_prime, b, seed in [(1, 4, math.log(10), -10.0, 0), (5, 8, math.log(10), -10.0, 1),
                                   (7, 3, 1.3, 0.5, 2)]:
        x, y = _features(B, D, seed)
        got = siglip_loss(x, y, torch.tensor(t_prime, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
        want = _siglip_by_hand(x.tolist(), y.tolist(), t_prime, b)
        assert abs(got.item() - want) < 1e-10, (B, got.item(), want)


def test_siglip_gradient_matches_autograd_of_hand_formula():
    siglip_loss = _chapter_siglip()
    x, y = _features(3, 5, 4)
    x.requires_grad_(True)
    t_prime = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, tp, bb: siglip_loss(a, y, tp, bb), (x, t_prime, b))


def test_exercise_claim_infonce_zero_at_batch_one_but_siglip_not():
    # 练习 ex-ch08-siglip-b1：B=1 时 InfoNCE 恒为 0，SigLIP 不为 0。
    x, y = _features(1, 8, 5)
    assert abs(clipedu.loss.clip_loss(x, y, torch.tensor(10.0, dtype=torch.float64)).item()) < 1e-12
    siglip_loss = _chapter_siglip()
    assert siglip_loss(x, y, torch.tensor(math.log(10), dtype=torch.float64),
                       torch.tensor(-10.0, dtype=torch.float64)).item() > 0.1


def test_siglip_initial_loss_formula_with_orthogonal_features():
    # 第 8.1 节：特征两两正交时 L_init = softplus(-b) + (B-1) softplus(b)；b=0 时为 B ln 2。
    siglip_loss = _chapter_siglip()
    softplus = lambda s: math.log1p(math.exp(s))  # noqa: E731
    for B, b in [(1, -10.0), (4, 0.0), (16, -10.0), (33, 2.5)]:
        eye = torch.eye(2 * B, dtype=torch.float64)
        got = siglip_loss(eye[:B], eye[B:], torch.tensor(math.log(10), dtype=torch.float64),
                          torch.tensor(b, dtype=torch.float64)).item()
        want = softplus(-b) + (B - 1) * softplus(b)
        assert abs(got - want) < 1e-12, (B, b, got, want)
        assert abs(want - _siglip_by_hand(eye[:B].tolist(), eye[B:].tolist(), math.log(10), b)) < 1e-10

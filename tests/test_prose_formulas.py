"""散文章节里的公式逐个做数值检验（float64），对应 book/ch02_concepts.md 与 book/ch09_faq.md。"""
import math

import torch
import torch.nn.functional as F

import clipedu.loss

DT = torch.float64


def test_cosine_equals_dot_after_l2_normalisation():
    # 第 2.3 节：归一化后余弦相似度就是点积。
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(7, generator=g, dtype=DT), torch.randn(7, generator=g, dtype=DT)
    cos = (u @ v) / (u.norm() * v.norm())
    torch.testing.assert_close(cos, F.normalize(u, dim=0) @ F.normalize(v, dim=0))
    torch.testing.assert_close(cos, F.cosine_similarity(u, v, dim=0))


def test_late_fusion_weighted_average_is_a_distribution():
    # 第 2.4 节：w p_I + (1-w) p_T 仍是概率分布，w=1/0 时退化为单一模态。
    g = torch.Generator().manual_seed(1)
    p_i = torch.softmax(torch.randn(5, generator=g, dtype=DT), 0)
    p_t = torch.softmax(torch.randn(5, generator=g, dtype=DT), 0)
    for w in (0.0, 0.3, 1.0):
        p = w * p_i + (1 - w) * p_t
        assert torch.all(p >= 0) and abs(p.sum().item() - 1) < 1e-12
    torch.testing.assert_close(1.0 * p_i + 0.0 * p_t, p_i)


def test_ddpm_closed_form_matches_iterated_forward_process():
    # 第 2.5 节：q(x_t|x_0) = N(sqrt(abar_t) x_0, (1-abar_t) I)，与逐步迭代的均值/方差递推一致。
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=DT)
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    m, v = 1.0, 0.0
    for t in range(T):
        m = math.sqrt(alphas[t].item()) * m
        v = alphas[t].item() * v + betas[t].item()
        assert abs(m - abar[t].sqrt().item()) < 1e-12 and abs(v - (1 - abar[t]).item()) < 1e-12


def test_ddpm_closed_form_by_monte_carlo():
    # 同一公式的抽样检验：逐步加噪得到的 x_t 样本，均值与方差符合闭式解。
    g = torch.Generator().manual_seed(2)
    betas = torch.linspace(1e-4, 0.2, 20, dtype=DT)
    abar = torch.cumprod(1 - betas, 0)
    x0 = torch.full((200_000,), 1.5, dtype=DT)
    x = x0.clone()
    for b in betas:
        x = (1 - b).sqrt() * x + b.sqrt() * torch.randn(x.shape, generator=g, dtype=DT)
    assert abs(x.mean().item() - abar[-1].sqrt().item() * 1.5) < 0.01
    assert abs(x.var().item() - (1 - abar[-1]).item()) < 0.01


def test_l_simple_is_mean_squared_noise_error():
    # L_simple = E||eps - eps_theta||^2：完美预测为 0，预测为 0 时等于 E||eps||^2 ≈ 维度。
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(20_000, 4, generator=g, dtype=DT)
    l_simple = lambda pred: ((eps - pred) ** 2).sum(dim=1).mean()  # noqa: E731
    assert l_simple(eps).item() == 0.0
    assert abs(l_simple(torch.zeros_like(eps)).item() - 4.0) < 0.1


def test_classifier_free_guidance_forms_agree():
    # eps_u + w (eps_c - eps_u) == (1+w') eps_c - w' eps_u 当 w = 1 + w'；w=0/1 退化为无条件/有条件。
    g = torch.Generator().manual_seed(4)
    eps_c, eps_u = torch.randn(3, 8, generator=g, dtype=DT), torch.randn(3, 8, generator=g, dtype=DT)
    cfg = lambda w: eps_u + w * (eps_c - eps_u)  # noqa: E731
    torch.testing.assert_close(cfg(0.0), eps_u)
    torch.testing.assert_close(cfg(1.0), eps_c)
    for w_prime in (0.5, 3.0, 7.5):
        torch.testing.assert_close(cfg(1 + w_prime), (1 + w_prime) * eps_c - w_prime * eps_u)


def test_temperature_bounds_from_logit_scale():
    # 第 9 章问 3 与练习：tau = exp(-s)，上限 s = ln 100 对应 tau = 0.01；tau=0.07 时 s ≈ 2.659，e^s ≈ 14.29。
    assert abs(math.exp(-math.log(100.0)) - 0.01) < 1e-15
    s0 = math.log(1 / 0.07)
    assert abs(s0 - 2.659) < 1e-3 and abs(math.exp(s0) - 14.2857) < 1e-3
    from clipedu.config import CLIPConfig
    cfg = CLIPConfig()
    assert abs(cfg.max_logit_scale - math.log(100.0)) < 1e-12
    assert abs(cfg.init_logit_scale - s0) < 1e-12


def test_initial_loss_is_ln_B_when_all_logits_equal():
    # 第 9 章问 4：相似度全相等时对称 InfoNCE 恰为 ln B。
    for B in (2, 8, 64):
        x = F.normalize(torch.randn(B, 16, dtype=DT), dim=-1)
        loss = clipedu.loss.clip_loss(x, x, torch.tensor(0.0, dtype=DT))
        assert abs(loss.item() - math.log(B)) < 1e-12


def test_retrieval_memory_arithmetic():
    # 第 9 章问 10 与练习 ex-ch09-memory：N=1e5 的 fp32 全矩阵 40 GB；50 万×250 万为 5 TB；1024 行一块约 2.05 GB。
    assert 1e5 * 1e5 * 4 == 40e9
    assert 2.5e6 * 5e5 * 4 == 5e12
    assert abs(1024 * 5e5 * 4 / 1e9 - 2.048) < 1e-9
    assert abs(256 * 5e5 * 4 / 1e9 - 0.512) < 1e-9
    assert abs((0.5e6 + 2.5e6) * 512 * 4 / 1e9 - 6.144) < 1e-9


def test_duplicate_captions_floor_is_ln_m_plus_1():
    # 第 9 章问 18：一条文本在批内出现 m+1 次时，对应行的图像→文本交叉熵下限为 ln(m+1)，温度再低也降不下去。
    g = torch.Generator().manual_seed(5)
    B, D = 10, 12
    for m in (1, 2, 4):
        txt = F.normalize(torch.randn(B, D, generator=g, dtype=DT), dim=-1)
        txt[1:m + 1] = txt[0]
        img = txt.clone()
        for scale in (10.0, 100.0, 1e4):
            per_row = F.cross_entropy(scale * img @ txt.T, torch.arange(B), reduction="none")
            assert torch.all(per_row[:m + 1] >= math.log(m + 1) - 1e-12)
        torch.testing.assert_close(per_row[:m + 1], torch.full((m + 1,), math.log(m + 1), dtype=DT))
        # 对称损失的下限：两个方向各有 m+1 行为 ln(m+1)，平均后为 (m+1) ln(m+1) / B
        sym = clipedu.loss.clip_loss(img, txt, torch.tensor(1e4, dtype=DT))
        assert abs(sym.item() - (m + 1) * math.log(m + 1) / B) < 1e-9
    assert abs(3 * math.log(3) / 8 - 0.41) < 0.005   # 练习 ex-ch09-duplicates 的数字

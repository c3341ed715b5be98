"""散文章节里的公式对照库里的代码检验（float64），对应 book/ch02_concepts.md 与 book/ch09_faq.md。

只留下能发现 clipedu 出错的检验：纯代数恒等式与常数算术不在这里测（它们测不出库的毛病）。
"""
import math

import torch
import torch.nn.functional as F

from clipedu.config import CLIPConfig
from clipedu.labs.diffusion import cfg_combine
from clipedu.loss import clip_loss
from clipedu.model import create_model

DT = torch.float64


def test_classifier_free_guidance_matches_both_forms_in_the_book():
    # 第 2.5 节：ε_∅ + w(ε_c − ε_∅) 与原文的 (1+w')ε_c − w'ε_∅ 在 w = 1 + w' 时相同。
    g = torch.Generator().manual_seed(4)
    eps_c, eps_u = torch.randn(3, 8, generator=g, dtype=DT), torch.randn(3, 8, generator=g, dtype=DT)
    torch.testing.assert_close(cfg_combine(eps_u, eps_c, 0.0), eps_u)
    torch.testing.assert_close(cfg_combine(eps_u, eps_c, 1.0), eps_c)
    for w_prime in (0.5, 3.0, 7.5):
        torch.testing.assert_close(cfg_combine(eps_u, eps_c, 1 + w_prime),
                                   (1 + w_prime) * eps_c - w_prime * eps_u)


def test_temperature_bounds_from_the_model():
    # 第 9 章问 3：对数逆温度 ln(1/τ) 初值 ln(1/0.07) ≈ 2.659（1/τ ≈ 14.29），截断后 τ ≥ 0.01。
    cfg = CLIPConfig()
    assert abs(cfg.init_logit_scale - 2.659) < 1e-3
    assert abs(math.exp(cfg.init_logit_scale) - 14.2857) < 1e-3
    model = create_model("tiny-cpu")
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert abs(math.exp(-model.logit_scale.item()) - 0.01) < 1e-6


def test_initial_loss_is_ln_B_when_all_logits_equal():
    # 第 9 章问 4：相似度全相等时对称 InfoNCE 恰为 ln B。
    for B in (2, 8, 64):
        x = F.normalize(torch.randn(B, 16, dtype=DT), dim=-1)
        loss = clip_loss(x, x, torch.tensor(0.0, dtype=DT))
        assert abs(loss.item() - math.log(B)) < 1e-12


def test_duplicate_captions_floor_is_ln_m_plus_1():
    # 第 9 章问 18：一条文本在批内出现 m+1 次时，对称损失的下限为 (m+1) ln(m+1) / B，
    # 1/τ 再大也降不下去。
    g = torch.Generator().manual_seed(5)
    B, D = 10, 12
    for m in (1, 2, 4):
        txt = F.normalize(torch.randn(B, D, generator=g, dtype=DT), dim=-1)
        txt[1:m + 1] = txt[0]
        img = txt.clone()
        for inv_t in (100.0, 1e4):
            sym = clip_loss(img, txt, torch.tensor(inv_t, dtype=DT))
            assert sym.item() >= (m + 1) * math.log(m + 1) / B - 1e-9
        assert abs(sym.item() - (m + 1) * math.log(m + 1) / B) < 1e-9

"""第 4 章的练习检查器：相似度矩阵、对称 InfoNCE 损失及其梯度（见第 4 章 sec-infonce）。

每个检查器接收学习者写的函数，在隐藏用例上运行，打印中文报告，返回 CheckResult。
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checker import (CheckFailure, Mistake, as_tensor, check_callable, expect_close, l2_normalize,
                       random_features, run_checks)


def _cosine(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    return l2_normalize(img) @ l2_normalize(txt).T  # (N, M)


def check_similarity_matrix(fn, verbose: bool = True):
    """检查 ``fn(image_features [N, D], text_features [M, D]) -> [N, M]`` 余弦相似度矩阵。
    对应练习 ``ex-ch04-similarity``。

    输入特征**未归一化**；第 i 行第 j 列应为 sim(图像 i, 文本 j)（式 eq-cosine）。
    """
    check_callable(fn, "check_similarity_matrix")

    def case(n, m, d, seed):
        def run():
            img = random_features(n, d, seed)
            txt = random_features(m, d, seed + 1)
            want = _cosine(img, txt)
            got = fn(img.float(), txt.float())
            mistakes = [
                Mistake("no_normalize", img @ txt.T, "你算的是点积，不是余弦相似度：先把两组特征各自做 L2 归一化（除以自身的范数）。"),
                Mistake("transposed", want.T, "结果转置了：行应对应图像、列应对应文本，即 image @ text.T。"),
                Mistake("normalize_wrong_dim", l2_normalize(img, 0) @ l2_normalize(txt, 0).T,
                        "归一化的维度不对：应沿特征维（dim=-1）求范数，而不是沿批维。"),
                Mistake("half_normalized", l2_normalize(img) @ txt.T, "只归一化了图像特征，文本特征也要归一化。"),
                Mistake("half_normalized", img @ l2_normalize(txt).T, "只归一化了文本特征，图像特征也要归一化。"),
            ]
            expect_close(got, want, "相似度矩阵", mistakes, atol=1e-4)
        return run

    cases = [("方阵：4 张图像 × 4 条文本", case(4, 4, 8, 10)),
             ("非方阵：3 张图像 × 5 条文本（检查行列方向）", case(3, 5, 16, 20)),
             ("较大的批：32 × 32，特征维 64", case(32, 32, 64, 30))]
    return run_checks("相似度矩阵 check_similarity_matrix", cases, verbose)


def _infonce_parts(img, txt, tau):
    """参考实现（float64）：返回 (图像→文本损失, 文本→图像损失)。"""
    logits = _cosine(img, txt) / tau  # (N, N)
    labels = torch.arange(logits.shape[0])
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)


def check_infonce(fn, verbose: bool = True):
    """检查 ``fn(image_features [N, D], text_features [N, D], tau: float) -> 标量``：对称 InfoNCE。
    对应练习 ``ex-ch04-infonce``。

    输入特征**未归一化**；损失 = (图像→文本的交叉熵 + 文本→图像的交叉熵) / 2，logits = sim / τ
    （式 eq-infonce）。第 i 张图像与第 i 条文本是正样本对。
    """
    check_callable(fn, "check_infonce")

    def case(n, d, tau, seed):
        def run():
            img = random_features(n, d, seed)
            txt = random_features(n, d, seed + 1)
            i2t, t2i = _infonce_parts(img, txt, tau)
            s = img @ txt.T
            labels = torch.arange(n)
            raw = (F.cross_entropy(s / tau, labels) + F.cross_entropy(s.T / tau, labels)) / 2
            m_i2t, m_t2i = _infonce_parts(img, txt, 1 / tau)
            n_i2t, n_t2i = _infonce_parts(img, txt, 1.0)
            got = as_tensor(fn(img.float(), txt.float(), tau), "损失")
            if got.numel() != 1:
                raise CheckFailure(f"损失应是一个标量（对批取平均），实际形状为 {tuple(got.shape)}", "not_scalar")
            mistakes = [
                Mistake("image_to_text_only", i2t, "你只算了图像→文本一个方向（源文公式 eq-infonce-i2t）。"
                        "CLIP 用的是对称损失：再算文本→图像（对 logits.T 做交叉熵），两者取平均。"),
                Mistake("text_to_image_only", t2i, "你只算了文本→图像一个方向。还要加上图像→文本方向，两者取平均。"),
                Mistake("sum_directions", i2t + t2i, "两个方向的损失应取平均（除以 2），而不是相加。"),
                Mistake("no_normalize", raw, "忘了 L2 归一化：sim 是余弦相似度，先把特征除以各自的范数。"),
                Mistake("tau_multiplied", (m_i2t + m_t2i) / 2, "温度用反了：logits 应是 sim / τ，而不是 sim × τ。"),
                Mistake("no_tau", (n_i2t + n_t2i) / 2, "忘了温度：logits 应是 sim / τ。"),
                Mistake("sum_over_batch", (i2t + t2i) / 2 * n, "应对批取平均（除以 N），而不是求和。"),
            ]
            expect_close(got.reshape(()), (i2t + t2i) / 2, "损失", mistakes, atol=1e-4)
        return run

    cases = [("N=4，τ=0.07（CLIP 的初始温度）", case(4, 8, 0.07, 40)),
             ("N=6，τ=0.5（温度较高）", case(6, 16, 0.5, 50)),
             ("N=16，τ=0.01（温度很低，注意数值稳定）", case(16, 32, 0.01, 60))]
    return run_checks("对称 InfoNCE 损失 check_infonce", cases, verbose)


def _softmax_grads(sim, tau):
    """返回 (图像→文本方向的梯度, 文本→图像方向的梯度)，均为 ∂L/∂s（式 eq-grad）。"""
    n = sim.shape[0]
    eye = torch.eye(n, dtype=sim.dtype)
    p_row = torch.softmax(sim / tau, dim=1)
    p_col = torch.softmax(sim / tau, dim=0)
    return (p_row - eye) / (n * tau), (p_col - eye) / (n * tau)


def check_infonce_grad(fn, direction: str = "symmetric", verbose: bool = True):
    """检查 ``fn(sim [N, N], tau) -> ∂L/∂sim [N, N]``（式 eq-grad 与 eq-grad-sym）。
    对应练习 ``ex-ch04-grad``。

    ``direction="symmetric"``：L 为对称平均损失，梯度 (P_row − I + P_col − I) / (2Nτ)，
    其中 P_row 按行、P_col 按列做 softmax；``direction="i2t"``：L 只含图像→文本方向，梯度 (P_row − I)/(Nτ)。
    """
    check_callable(fn, "check_infonce_grad")
    if direction not in ("symmetric", "i2t"):
        raise ValueError(f"direction 应为 'symmetric' 或 'i2t'，实际为 {direction!r}")

    def case(n, tau, seed):
        def run():
            g = torch.Generator().manual_seed(seed)
            sim = torch.rand(n, n, generator=g, dtype=torch.float64) * 2 - 1
            g_row, g_col = _softmax_grads(sim, tau)
            want = g_row if direction == "i2t" else (g_row + g_col) / 2
            mistakes = [
                Mistake("row_only", g_row, "这是只含图像→文本方向的梯度 (P_row − I)/(Nτ)。对称损失还要加上"
                        "文本→图像方向（按列做 softmax），两者取平均。"),
                Mistake("col_only", g_col, "这是文本→图像方向（按列 softmax）的梯度；图像→文本方向要按行做 softmax。"),
                Mistake("no_half", g_row + g_col, "对称损失是两个方向的平均，梯度也要除以 2。"),
                Mistake("no_tau", want * tau, "少了 1/τ：logits = s/τ，链式法则会带出一个 1/τ。"),
                Mistake("no_batch_mean", want * n, "少了 1/N：损失对批取平均，所以每个元素的梯度要除以 N。"),
                Mistake("sign", -want, "符号反了：正样本位置 (i, i) 的梯度应为负（增大 s_ii 会降低损失）。"),
            ]
            got = fn(sim.float() if seed % 2 else sim.clone(), tau)
            expect_close(got, want, "梯度", mistakes, atol=1e-4 / tau)
        return run

    cases = [("N=3，τ=0.07", case(3, 0.07, 70)),
             ("N=5，τ=1.0", case(5, 1.0, 71)),
             ("N=8，τ=0.2", case(8, 0.2, 72))]
    title = "InfoNCE 梯度 check_infonce_grad（" + ("对称损失" if direction == "symmetric" else "图像→文本方向") + "）"
    return run_checks(title, cases, verbose)


__all__ = ["check_similarity_matrix", "check_infonce", "check_infonce_grad"]

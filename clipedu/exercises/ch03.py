"""第 3 章的练习检查器：图块切分、零样本预测与提示集成（见第 3 章 sec-step-image、sec-zero-shot）。"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checker import CheckFailure, Mistake, as_tensor, check_callable, expect_close, l2_normalize, random_features, run_checks


def check_patchify(fn, verbose: bool = True):
    """检查 ``fn(images [B, C, H, W], patch_size) -> [B, N, C*p*p]``：把图像切成不重叠的图块并展平。
    对应练习 ``ex-ch03-patchify``。

    图块按行优先排列（先从左到右，再从上到下）；每个图块按 (C, p, p) 的顺序展平，
    与 ViT 中步长为 p 的卷积 ``conv1`` 的权重 ``weight.reshape(width, -1)`` 一一对应。
    """
    check_callable(fn, "check_patchify")

    def case(b, c, h, p, seed):
        def run():
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(b, c, h, h, generator=g)
            want = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
            gh = h // p
            grid = x.reshape(b, c, gh, p, gh, p)
            mistakes = [
                Mistake("channel_last", grid.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gh, -1),
                        "图块内部的展平顺序不对：应按 (C, p, p) 展平（通道在最前），与 conv1.weight.reshape(width, -1) 对应。"),
                Mistake("grid_transposed", grid.permute(0, 4, 2, 1, 3, 5).reshape(b, gh * gh, -1),
                        "图块的排列顺序不对：应按行优先（同一行从左到右，再换下一行）。"),
                Mistake("not_transposed", want.transpose(1, 2), "维度顺序不对：结果应为 [B, N, C*p*p]（图块数在中间），"
                        "F.unfold 的输出是 [B, C*p*p, N]，需要再转置。"),
            ]
            expect_close(fn(x.clone(), p), want.double(), "图块张量", mistakes, atol=1e-6)
        return run

    cases = [("1 张 3×8×8 图像，图块 4（共 4 块）", case(1, 3, 8, 4, 80)),
             ("2 张 3×32×32 图像，图块 8（tiny-cpu 的设置，共 16 块）", case(2, 3, 32, 8, 81)),
             ("2 张 1×6×6 图像，图块 2", case(2, 1, 6, 2, 82))]
    return run_checks("图块切分 check_patchify", cases, verbose)


def check_zero_shot_predict(fn, verbose: bool = True):
    """检查 ``fn(image_features [N, D], class_text_features [C, D]) -> LongTensor[N]``：零样本预测。
    对应练习 ``ex-ch03-zero-shot``。

    两组特征都**未归一化**；预测 = 与图像余弦相似度最高的类别下标（第 3 章 sec-zero-shot 的第 3、4 步）。
    """
    check_callable(fn, "check_zero_shot_predict")

    def case(n, c, d, seed):
        def run():
            img = random_features(n, d, seed)
            txt = random_features(c, d, seed + 1, scale=20.0)  # 类别向量长短悬殊：不归一化就会偏向长向量
            sim = l2_normalize(img) @ l2_normalize(txt).T  # (N, C)
            want = sim.argmax(dim=1)
            got = fn(img.float(), txt.float())
            got_t = as_tensor(got, "预测")
            if isinstance(got, torch.Tensor) and got.is_floating_point():
                raise CheckFailure("预测应是类别下标（整数张量，用 argmax），而不是相似度或概率。", "not_index")
            mistakes = [
                Mistake("no_normalize_text", (img @ txt.T).argmax(dim=1),
                        "没有归一化文本（类别）特征：长度更大的类别向量会“赢”太多次。余弦相似度要两边都归一化。"),
                Mistake("argmin", sim.argmin(dim=1), "应取相似度最大的类别（argmax），不是最小。"),
                Mistake("wrong_dim", sim.argmax(dim=0), "argmax 的维度不对：对每张图像（每一行）在类别维（dim=1）上取最大。"),
            ]
            expect_close(got_t, want.double(), "预测", mistakes, atol=0)
        return run

    cases = [("5 张图像，3 个类别", case(5, 3, 8, 90)),
             ("40 张图像，10 个类别", case(40, 10, 16, 91)),
             ("64 张图像，24 个类别（图形世界的类别数）", case(64, 24, 32, 92))]
    return run_checks("零样本预测 check_zero_shot_predict", cases, verbose)


def check_prompt_ensemble(fn, verbose: bool = True):
    """检查 ``fn(template_features [C, T, D]) -> classifier [D, C]``：提示集成。
    对应练习 ``ex-ch03-ensemble``。

    每个类别有 T 个模板的文本特征（未归一化）：先逐个 L2 归一化，再在模板维上取平均，
    最后再 L2 归一化；返回形状与 ``clipedu.zero_shot_classifier`` 相同的 [D, C]。
    """
    check_callable(fn, "check_prompt_ensemble")

    def case(c, t, d, seed):
        def run():
            x = random_features(c * t, d, seed, scale=10.0).reshape(c, t, d)
            want = l2_normalize(l2_normalize(x).mean(dim=1)).T  # (D, C)
            mistakes = [
                Mistake("no_normalize_before_mean", l2_normalize(x.mean(dim=1)).T,
                        "平均之前要先把每个模板的特征归一化，否则长度大的模板会主导平均结果。"),
                Mistake("no_normalize_after_mean", l2_normalize(x).mean(dim=1).T,
                        "平均之后还要再做一次 L2 归一化：单位向量的平均不再是单位向量。"),
                Mistake("transposed", want.T, "形状应为 [D, C]（与 zero_shot_classifier 一致，便于 image_features @ classifier）。"),
            ]
            expect_close(fn(x.float()), want, "分类器", mistakes, atol=1e-4)
        return run

    cases = [("3 个类别 × 4 个模板", case(3, 4, 8, 100)),
             ("24 个类别 × 8 个模板", case(24, 8, 32, 101)),
             ("单模板：5 个类别 × 1 个模板", case(5, 1, 16, 102))]
    return run_checks("提示集成 check_prompt_ensemble", cases, verbose)


__all__ = ["check_patchify", "check_zero_shot_predict", "check_prompt_ensemble"]

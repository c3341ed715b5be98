"""第 6 章的练习检查器：top-k 检索、R@k 与近重复检测（见第 6 章 sec-retrieval、sec-near-duplicates）。"""
from __future__ import annotations

import torch

from ..evaluate import retrieval_metrics
from ._checker import CheckFailure, Mistake, as_tensor, check_callable, expect_close, l2_normalize, random_features, run_checks


def check_topk_search(fn, verbose: bool = True):
    """检查 ``fn(query [D], gallery [N, D], k) -> LongTensor[k]``：以余弦相似度从大到小返回前 k 个图库下标。
    对应练习 ``ex-ch06-topk``。

    query 与 gallery 都**未归一化**（图库向量长短不一），第 0 个是最相似的。
    """
    check_callable(fn, "check_topk_search")

    def case(n, d, k, seed):
        def run():
            gallery = random_features(n, d, seed, scale=8.0)
            query = random_features(1, d, seed + 1)[0]
            sim = l2_normalize(gallery) @ l2_normalize(query)  # (N,)
            want = sim.argsort(descending=True)[:k]
            got = fn(query.float(), gallery.float(), k)
            if isinstance(got, torch.Tensor) and got.is_floating_point():
                raise CheckFailure("应返回图库下标（整数张量，例如 topk(...).indices），而不是相似度。", "values")
            got = as_tensor(got, "检索结果").reshape(-1)
            mistakes = [
                Mistake("ascending", sim.argsort()[:k].double(), "排序方向反了：要相似度最大的 k 个（descending=True）。"),
                Mistake("no_normalize", (gallery @ query).argsort(descending=True)[:k].double(),
                        "没有归一化图库向量：点积会偏向长度大的向量。余弦相似度要先把图库各行 L2 归一化。"),
                Mistake("off_by_one", sim.argsort(descending=True)[1:k + 1].double(),
                        "丢掉了最相似的那一个：查询不在图库里，第 0 名也要返回。"),
            ]
            if got.shape != want.shape and got.numel() == n:
                raise CheckFailure(f"应只返回前 k={k} 个下标，实际返回了 {got.numel()} 个（整个排序）。", "not_truncated")
            expect_close(got, want.double(), "检索结果", mistakes, atol=0)
        return run

    cases = [("图库 10 张，取前 3", case(10, 8, 3, 110)),
             ("图库 200 张，取前 10", case(200, 32, 10, 111)),
             ("k=1：只要最相似的一张", case(50, 16, 1, 112))]
    return run_checks("以文搜图 check_topk_search", cases, verbose)


def _t2i_recall(text_emb, image_emb, text_to_image, k):
    return retrieval_metrics(image_emb, text_emb, text_to_image, ks=(k,))[f"t2i_R@{k}"]


def check_recall_at_k(fn, verbose: bool = True):
    """检查 ``fn(text_emb [Nt, D], image_emb [Ni, D], text_to_image [Nt], k) -> float``：文→图 R@k。
    对应练习 ``ex-ch06-recall``。

    两组特征都已 L2 归一化；``text_to_image[t]`` 是第 t 条文本的正确图像。R@k = 正确图像排进前 k 的文本比例，
    一张图可以有多条文本（与 ``clipedu.retrieval_metrics`` 的 ``t2i_R@k`` 相同）。
    """
    check_callable(fn, "check_recall_at_k")

    def case(ni, per_image, d, k, seed):
        def run():
            image_emb = l2_normalize(random_features(ni, d, seed))
            t2i = torch.arange(ni).repeat_interleave(per_image)
            g = torch.Generator().manual_seed(seed + 1)
            # 文本 = 对应图像 + 噪声：R@k 既不是 0 也不是 1，才能区分对错
            text_emb = l2_normalize(image_emb[t2i] + 1.2 * torch.randn(len(t2i), d, generator=g, dtype=torch.float64))
            want = torch.tensor(_t2i_recall(text_emb, image_emb, t2i, k), dtype=torch.float64)
            sim = text_emb @ image_emb.T  # (Nt, Ni)
            rank = (sim > sim.gather(1, t2i[:, None])).sum(dim=1) + 1
            mistakes = [
                Mistake("i2t", torch.tensor(retrieval_metrics(image_emb, text_emb, t2i, ks=(k,))[f"i2t_R@{k}"],
                                            dtype=torch.float64),
                        "你算的是图→文方向（拿图像去找文本）；这里要文→图：每条文本在全部图像里排序。"),
                Mistake("ascending", (((sim < sim.gather(1, t2i[:, None])).sum(dim=1) + 1) <= k).double().mean(),
                        "排序方向反了：名次按相似度从大到小数。"),
                Mistake("off_by_one", (rank < k).double().mean(), "差了一名：名次从 1 起，正确图像排第 k 名也算命中（rank ≤ k）。"),
                Mistake("percent", want * 100, "应返回 [0, 1] 的比例，不是百分数。"),
            ]
            got = fn(text_emb.float(), image_emb.float(), t2i.clone(), k)
            expect_close(as_tensor(got, "R@k").reshape(()), want, f"R@{k}", mistakes, atol=1e-6)
        return run

    cases = [("一图一文：40 对，R@1", case(40, 1, 16, 1, 120)),
             ("一图一文：40 对，R@5", case(40, 1, 16, 5, 121)),
             ("一图五文（像 Flickr30K-CN）：30 张图、150 条文本，R@5", case(30, 5, 16, 5, 122))]
    return run_checks("检索指标 check_recall_at_k", cases, verbose)


def check_near_duplicates(fn, verbose: bool = True):
    """检查 ``fn(embeddings [N, D], threshold) -> list[(i, j)]``：余弦相似度 ≥ threshold 的所有图像对。
    对应练习 ``ex-ch06-dups``。

    特征**未归一化**；只返回 i < j 的对（不含自己与自己，也不重复列出 (j, i)），按 (i, j) 升序。
    """
    check_callable(fn, "check_near_duplicates")

    def case(n, d, n_dup, threshold, seed):
        def run():
            g = torch.Generator().manual_seed(seed)
            x = random_features(n, d, seed)
            src = torch.randperm(n, generator=g)[:n_dup]
            # 近重复 = 原图特征加一点扰动、长度也变了（就像增强过的副本）
            dups = x[src] * 1.7 + 0.05 * torch.randn(n_dup, d, generator=g, dtype=torch.float64) * x[src].norm(dim=1, keepdim=True)
            emb = torch.cat([x, dups])
            sim = l2_normalize(emb) @ l2_normalize(emb).T
            want = sorted((i, j) for i, j in (sim >= threshold).nonzero().tolist() if i < j)
            got = fn(emb.float(), threshold)
            try:
                got = sorted((int(i), int(j)) for i, j in got)
            except (TypeError, ValueError):
                raise CheckFailure("应返回 (i, j) 二元组的列表，例如 [(0, 12), (3, 15)]。", "type") from None
            if any(i == j for i, j in got):
                raise CheckFailure("结果里有 (i, i)：每张图与自己的相似度都是 1，要排除对角线。", "self_pairs")
            if any((j, i) in set(got) for i, j in got):
                raise CheckFailure("同一对出现了两次 ((i, j) 和 (j, i))：只保留 i < j 的那一个。", "both_orders")
            if got != want:
                missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
                hint = "阈值比较写成了 > 吗？" if missing and not extra else "是否先做了 L2 归一化（余弦，而不是点积）？"
                raise CheckFailure(f"应找到 {len(want)} 对，实际 {len(got)} 对；漏掉 {missing[:3]}，多出 {extra[:3]}。{hint}",
                                   "value")
        return run

    cases = [("20 张图，其中 3 张有近重复副本，阈值 0.95", case(20, 32, 3, 0.95, 130)),
             ("60 张图，8 个副本，阈值 0.9", case(60, 64, 8, 0.9, 131)),
             ("阈值 1.0 以上：一对也没有", case(15, 16, 2, 1.01, 132))]
    return run_checks("近重复检测 check_near_duplicates", cases, verbose)


__all__ = ["check_topk_search", "check_recall_at_k", "check_near_duplicates"]

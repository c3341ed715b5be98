"""图形问答 ShapesVQADataset：几何图形世界上的中文视觉问答（见第 2 章 sec-fusion-lab）。

问题有三类：是非题（``图中有红色的圆形吗？``）、问颜色（``三角形是什么颜色？``）、
问形状（``红色的图形是什么形状？``）。关键是**答案对问题是均衡的**：把所有
（问题文本, 答案）对排成一个“区块”，每个区块打乱后依次分给样本，于是每个问题
文本在每个完整区块里对其每个可能答案恰好各出现一次——只看问题、不看图的模型
只能猜，准确率等于随机水平。这让“融合”带来的提升可以被干净地测出来。

一张图里 1–3 个物体，颜色互不相同、形状也互不相同，所以“X 是什么颜色”只有一个答案。
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..data.render import render_batch
from ..data.shapes import CHUNK, COLORS, SHAPES, as_index, sample_colors, sample_layout
from ..data.transforms import normalize_uint8

ANSWERS = ["是", "否"] + list(COLORS) + list(SHAPES)
YES, NO = 0, 1
_COLOR_ANS, _SHAPE_ANS = 2, 2 + len(COLORS)
YESNO_TEMPLATES = ("图中有{c}的{s}吗？", "画面里有没有{c}的{s}？")
SPLITS = {"train": 0, "test": 1}


def _build_pairs() -> list[tuple[str, int, str, int, int]]:
    """全部 (问题, 答案 id, 题型, 颜色, 形状) 组合——一个均衡区块。颜色/形状 = 场景里必须有（或必须没有）的物体。"""
    pairs = []
    nc, ns = len(COLORS), len(SHAPES)
    for tpl in YESNO_TEMPLATES:
        for c in range(nc):
            for s in range(ns):
                q = tpl.format(c=COLORS[c], s=SHAPES[s])
                pairs += [(q, YES, "yesno", c, s), (q, NO, "yesno", c, s)]
    for s in range(ns):
        pairs += [(f"{SHAPES[s]}是什么颜色？", _COLOR_ANS + c, "color", c, s) for c in range(nc)]
    for c in range(nc):
        pairs += [(f"{COLORS[c]}的图形是什么形状？", _SHAPE_ANS + s, "shape", c, s) for s in range(ns)]
    return pairs


PAIRS = _build_pairs()
QUESTIONS = sorted({q for q, *_ in PAIRS})
# 每个问题文本的答案集合；均衡意味着答案在这个集合上均匀分布
ANSWER_SETS = {q: sorted({a for q2, a, *_ in PAIRS if q2 == q}) for q in QUESTIONS}
# 只看问题的最好策略在均衡数据上的期望准确率：每题 1/|答案集合|，按题出现频率加权
BLIND_CHANCE = float(np.mean([1.0 / len(ANSWER_SETS[q]) for q, *_ in PAIRS]))


def _scene(rng: np.random.Generator, answer: int, c: int, s: int, n: int) -> list[tuple[int, int]]:
    """抽 n 个颜色互异、形状互异的物体；答“否”时场景里没有 (c, s)，其余情况一定有。"""
    nc, ns = len(COLORS), len(SHAPES)
    if answer != NO:
        first = (c, s)
    else:
        # 三分之二的“否”带一个干扰物（同色异形或同形异色），盲猜颜色或形状都不够
        kind = rng.integers(3)
        other_c = int(rng.choice([x for x in range(nc) if x != c]))
        other_s = int(rng.choice([x for x in range(ns) if x != s]))
        first = [(c, other_s), (other_c, s), (other_c, other_s)][kind]
    colors = [int(x) for x in rng.permutation(nc) if x != first[0]]
    shapes = [int(x) for x in rng.permutation(ns) if x != first[1]]
    spare = shapes[n - 1]  # 没被用到的形状，用来替换意外画出的 (c, s)
    objs = [first]
    for k in range(n - 1):
        cand = (colors[k], shapes[k])
        objs.append((colors[k], spare) if answer == NO and cand == (c, s) else cand)
    order = rng.permutation(n)  # 打乱顺序，问到的物体不总在同一槽位
    return [objs[j] for j in order]


class ShapesVQADataset(torch.utils.data.Dataset):
    """图形问答（见第 2 章 sec-fusion-lab）。样本为 ``(图像 [3,H,W], 问题 str, 答案 id)``，答案文本为 ``ANSWERS[id]``。

    第 i 个样本是 (seed, split, i) 的纯函数；size 为区块长度（len(PAIRS)）的整数倍时，
    每个问题的答案分布严格均匀。
    """

    answers = ANSWERS
    questions = QUESTIONS
    answer_sets = ANSWER_SETS
    blind_chance = BLIND_CHANCE

    def __init__(self, split: str = "train", size: int = 4 * len(PAIRS), seed: int = 0,
                 image_size: int = 32, transform=None):
        if split not in SPLITS:
            raise ValueError(f"split 应为 {list(SPLITS)} 之一，实际为 {split!r} / unknown split")
        for name, value, low in (("size", size, 1), ("image_size", image_size, 16), ("seed", seed, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} 应为 ≥{low} 的整数，实际为 {value!r}")
        self.split, self.size, self.seed, self.image_size, self.transform = split, size, seed, image_size, transform
        self._cache: dict[int, tuple] = {}
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.size

    def _pair(self, i: int) -> tuple:
        """第 i 个样本的 (问题, 答案, 题型, 颜色, 形状)：区块 i // L 打乱后的第 i % L 个。"""
        L = len(PAIRS)
        block = i // L
        if block not in self._perms:
            if len(self._perms) >= 256:
                self._perms.pop(next(iter(self._perms)))
            self._perms[block] = np.random.default_rng([self.seed, SPLITS[self.split], block, 1]).permutation(L)
        return PAIRS[self._perms[block][i % L]]

    def _chunk(self, chunk: int) -> tuple[np.ndarray, list]:
        if chunk in self._cache:
            return self._cache[chunk]
        # 随机数总是按整块 1024 个抽，第 i 个样本才与 size 无关；只渲染用得到的前 m 个
        rng = np.random.default_rng([self.seed, SPLITS[self.split], chunk, 2])
        m = min(CHUNK, self.size - chunk * CHUNK)
        n = rng.integers(1, 4, CHUNK)
        pairs = [self._pair(chunk * CHUNK + j) for j in range(CHUNK)]
        scenes = [_scene(rng, a, c, s, int(k)) for (_, a, _, c, s), k in zip(pairs, n)]
        colors = np.zeros((CHUNK, 3), dtype=np.int64)
        shapes = np.full((CHUNK, 3), -1, dtype=np.int64)
        for j, objs in enumerate(scenes):
            for k, (c, s) in enumerate(objs):
                colors[j, k], shapes[j, k] = c, s
        _, _, centers, radii = sample_layout(rng, n, 3)
        rgb, background = sample_colors(rng, colors)
        images = render_batch(shapes[:m], centers[:m], radii[:m], rgb[:m], background[:m], self.image_size)
        scenes = scenes[:m]
        if len(self._cache) >= 64:
            self._cache.pop(next(iter(self._cache)))
        self._cache[chunk] = (images, scenes)
        return self._cache[chunk]

    def _index(self, i) -> int:
        return as_index(i, self.size)

    def raw(self, i: int) -> np.ndarray:
        """第 i 张图的 uint8 数组 [H, W, 3]。"""
        i = self._index(i)
        return self._chunk(i // CHUNK)[0][i % CHUNK]

    def objects(self, i: int) -> list[tuple[int, int]]:
        """第 i 张图中的物体 [(颜色下标, 形状下标), …]。"""
        i = self._index(i)
        return list(self._chunk(i // CHUNK)[1][i % CHUNK])

    def question(self, i: int) -> str:
        return self._pair(self._index(i))[0]

    def answer(self, i: int) -> int:
        return self._pair(self._index(i))[1]

    def question_type(self, i: int) -> str:
        """"yesno"、"color" 或 "shape"。"""
        return self._pair(self._index(i))[2]

    def __getitem__(self, i):
        img = self.raw(i)
        image = normalize_uint8(img) if self.transform is None else self.transform(Image.fromarray(img))
        return image, self.question(i), self.answer(i)

    def get_batch(self, indices) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """一次取一批：``(图像 [B,3,H,W], 问题列表, 答案 LongTensor[B])``。"""
        indices = [self._index(i) for i in indices]
        if self.transform is None:
            images = normalize_uint8(np.stack([self.raw(i) for i in indices]))
        else:
            images = torch.stack([self.transform(Image.fromarray(self.raw(i))) for i in indices])
        answers = torch.tensor([self.answer(i) for i in indices], dtype=torch.long)
        return images, [self.question(i) for i in indices], answers

    def __repr__(self) -> str:
        return f"ShapesVQADataset(split={self.split!r}, size={self.size}, seed={self.seed}, image_size={self.image_size})"

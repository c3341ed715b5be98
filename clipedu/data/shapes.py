"""几何图形世界 ShapesDataset：程序生成的彩色图形与中文标题（见第 3 章 sec-step-data）。

为什么用它：真实图文数据动辄上亿对，而这个小世界在 2 个 CPU 核上几分钟就能学会，
又保留了 CLIP 的全部要素——图像、自然语言标题、零样本分类。我们还把一部分
（颜色, 形状）组合**留出**（held-out），训练集里一次也不出现，用来检验模型能否把
“红色”和“正方形”这两个见过的概念组合成一个没见过的类别。

第 i 个样本是 (seed, split, i) 的纯函数：参数按 1024 个一块、用以 (seed, split, 块号)
为种子的随机数生成器批量抽取，所以可以按位置精确续训，也与 size 无关。
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from PIL import Image

from .render import render_batch
from .transforms import normalize_uint8

# 6 种在 32 px 下也一眼能分清的颜色（名字与基准 RGB）
COLORS = ("红色", "黄色", "绿色", "蓝色", "紫色", "白色")
COLOR_RGB = np.array([[220, 40, 40], [235, 205, 35], [45, 175, 65],
                      [45, 100, 235], [160, 70, 215], [235, 235, 235]], dtype=np.float32)
SHAPES = ("圆形", "正方形", "三角形", "星形", "十字形", "菱形")  # 顺序与 render.SHAPE_KEYS 一致
SIZES = ("大", "小")
SIZE_RADIUS = (0.22, 0.145)                      # 相对图宽的半径
POSITIONS = ("左上方", "右上方", "左下方", "右下方", "中间")
POSITION_XY = np.array([[0.27, 0.27], [0.73, 0.27], [0.27, 0.73], [0.73, 0.73], [0.5, 0.5]], dtype=np.float32)
# 留出组合：拉丁方的一条“对角线”——每种颜色、每种形状恰好各留出一次，
# 所以每个颜色词、形状词在训练中都见过（各与另外 5 种搭配）。
# 红色的圆形、蓝色的三角形都在训练集里（第 2 章扩散模型要生成它们）。
HELDOUT_COMBOS = tuple((c, (c + 1) % len(SHAPES)) for c in range(len(COLORS)))
NUM_CLASSES = len(COLORS) * len(SHAPES)
HELDOUT_CLASSES = sorted(c * len(SHAPES) + s for c, s in HELDOUT_COMBOS)
SEEN_CLASSES = [i for i in range(NUM_CLASSES) if i not in HELDOUT_CLASSES]

SPLITS = {"train": 0, "test": 1, "heldout": 2}
CHUNK = 1024

# 单物体标题模板：{c} 颜色、{s} 形状、{z} 大/小、{p} 位置
SINGLE_TEMPLATES = (
    "{c}的{s}",
    "一个{c}的{s}",
    "一个{c}的{z}{s}",
    "一个{z}号的{c}{s}",
    "图中有一个位于{p}的{z}号{c}{s}",
    "{p}有一个{c}的{s}",
    "一张{c}{s}的图片",
    "这是一个{c}的{s}。",
    "画面{p}是一个{z}的{c}{s}",
    "一个{s}，颜色是{c}",
    "{z}号{c}{s}",
    "深色背景上的{c}{s}",
)
_NUM = {2: "两", 3: "三"}


def _join(parts: list[str]) -> str:
    """["甲", "乙", "丙"] → "甲、乙和丙"。"""
    return parts[0] if len(parts) == 1 else "、".join(parts[:-1]) + "和" + parts[-1]


def _multi_caption(objs: list[tuple], t: int) -> str:
    """2–3 个物体的标题；模板 t 取模选用。所有模板都给出每个物体的颜色和形状。"""
    names = [f"{COLORS[c]}的{SHAPES[s]}" for c, s, _, _ in objs]
    t %= 5
    if t == 0:
        return _join(names)
    if t == 1:
        return "图中有" + _join(names)
    if t == 2:
        return f"{_NUM[len(objs)]}个图形：" + _join(names)
    if t == 3:
        return _join(["一个" + n for n in names])
    return "，".join(f"{POSITIONS[p]}是{COLORS[c]}{SHAPES[s]}" for c, s, _, p in objs)


def make_caption(objs: list[tuple], template_id: int) -> str:
    """由物体列表 [(颜色, 形状, 大小, 位置) 下标] 生成中文标题，第一个物体最先提到。"""
    if len(objs) > 1:
        return _multi_caption(objs, template_id)
    c, s, z, p = objs[0]
    tpl = SINGLE_TEMPLATES[template_id % len(SINGLE_TEMPLATES)]
    return tpl.format(c=COLORS[c], s=SHAPES[s], z=SIZES[z], p=POSITIONS[p])


def class_id(color: int, shape: int) -> int:
    """(颜色下标, 形状下标) → 类别编号。"""
    return color * len(SHAPES) + shape


def sample_layout(rng: np.random.Generator, n_objects: np.ndarray, K: int):
    """为每张图抽位置、大小与抖动：单个物体可在 5 处之一，多个物体占不同的角，互不重叠。"""
    C = len(n_objects)
    corners = rng.random((C, 4)).argsort(axis=1)[:, :K]                     # (C, K) 互不相同的角
    single = rng.integers(0, len(POSITIONS), C)
    pos = np.where((n_objects == 1)[:, None], single[:, None], corners)     # (C, K)
    size = rng.integers(0, len(SIZES), (C, K))
    centers = POSITION_XY[pos] + rng.uniform(-0.025, 0.025, (C, K, 2)).astype(np.float32)
    radii = np.asarray(SIZE_RADIUS, dtype=np.float32)[size] * rng.uniform(0.93, 1.07, (C, K)).astype(np.float32)
    return pos, size, centers, radii


def sample_colors(rng: np.random.Generator, colors: np.ndarray):
    """物体颜色加轻微抖动，背景是带一点色调的深灰，与 6 种颜色都有足够反差。"""
    C, K = colors.shape
    rgb = np.clip(COLOR_RGB[colors] + rng.normal(0, 10, (C, K, 3)), 0, 255)
    gray = rng.uniform(15, 60, (C, 1))
    background = np.clip(gray + rng.uniform(-8, 8, (C, 3)), 0, 255)
    return rgb, background


class ShapesDataset(torch.utils.data.Dataset):
    """几何图形世界（见第 3 章 sec-step-data）。样本为 ``(图像 [3,H,W], 中文标题, 类别)``。

    split："train"（只含非留出组合）、"test"（同样的组合、另一条随机流）、
    "heldout"（只含留出组合）。类别是第一个物体的 (颜色, 形状) 编号，共 36 类。
    transform=None 时直接做 CLIP 归一化；否则对 PIL 图像调用 transform。
    """

    COLORS = COLORS
    SHAPES = SHAPES
    SIZES = SIZES
    POSITIONS = POSITIONS
    classnames = [f"{c}的{s}" for c in COLORS for s in SHAPES]
    class_attributes = [(c, s) for c in COLORS for s in SHAPES]
    heldout_classes = list(HELDOUT_CLASSES)
    seen_classes = list(SEEN_CLASSES)

    def __init__(self, split: str = "train", size: int = 10000, image_size: int = 32, seed: int = 0,
                 max_objects: int = 1, transform=None, max_cache_mb: float = 1024.0):
        _check_args(split, size, image_size, seed, max_objects)
        self.split, self.size, self.image_size = split, size, image_size
        self.seed, self.max_objects, self.transform = seed, max_objects, transform
        allowed = self.heldout_classes if split == "heldout" else self.seen_classes
        self._allowed = np.asarray(allowed)
        chunk_bytes = CHUNK * 3 * image_size * image_size
        self._max_chunks = max(1, int(max_cache_mb * 2**20 // chunk_bytes))
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.size

    # ---- 参数与渲染 ----
    def _params(self, chunk: int) -> dict:
        """第 chunk 块（1024 个样本）的全部随机参数；只依赖 (seed, split, max_objects, 块号)。"""
        rng = np.random.default_rng([self.seed, SPLITS[self.split], chunk])
        K = self.max_objects
        n = rng.integers(1, K + 1, CHUNK)
        # 每张图的 K 个物体取互不相同的组合（只从本划分允许的组合里取）
        pick = rng.random((CHUNK, len(self._allowed))).argsort(axis=1)[:, :K]
        classes = self._allowed[pick]                                        # (C, K)
        colors, shapes = classes // len(SHAPES), classes % len(SHAPES)
        pos, size, centers, radii = sample_layout(rng, n, K)
        rgb, background = sample_colors(rng, colors)
        template = rng.integers(0, 1 << 30, CHUNK)
        drawn = np.where(np.arange(K)[None, :] < n[:, None], shapes, -1)
        return dict(n=n, colors=colors, shapes=shapes, drawn=drawn, pos=pos, size=size,
                    centers=centers, radii=radii, rgb=rgb, background=background, template=template)

    def _chunk(self, chunk: int) -> tuple[np.ndarray, dict]:
        if chunk not in self._cache:
            p = self._params(chunk)
            m = min(CHUNK, self.size - chunk * CHUNK)  # 最后一块只画用得到的部分
            images = render_batch(p["drawn"][:m], p["centers"][:m], p["radii"][:m],
                                  p["rgb"][:m], p["background"][:m], self.image_size)
            if len(self._cache) >= self._max_chunks:
                self._cache.pop(next(iter(self._cache)))  # 超出缓存预算时丢掉最早的一块
            self._cache[chunk] = (images, p)
        return self._cache[chunk]

    def _index(self, i) -> int:
        return as_index(i, self.size)

    def _item(self, i) -> tuple[np.ndarray, list[tuple], str, int]:
        """第 i 个样本的 (uint8 图, 物体列表, 标题, 类别)，只查一次缓存。"""
        i = self._index(i)
        images, p = self._chunk(i // CHUNK)
        j = i % CHUNK
        objs = [(int(p["colors"][j, k]), int(p["shapes"][j, k]), int(p["size"][j, k]), int(p["pos"][j, k]))
                for k in range(int(p["n"][j]))]
        return images[j], objs, make_caption(objs, int(p["template"][j])), class_id(objs[0][0], objs[0][1])

    def objects(self, i: int) -> list[tuple]:
        """第 i 张图中的物体：[(颜色下标, 形状下标, 大小下标, 位置下标), …]，按标题中的顺序。"""
        return self._item(i)[1]

    def raw(self, i: int) -> np.ndarray:
        """第 i 张图的 uint8 数组 [H, W, 3]（未归一化，便于显示或自定义变换）。"""
        return self._item(i)[0]

    def caption(self, i: int) -> str:
        return self._item(i)[2]

    def label(self, i: int) -> int:
        return self._item(i)[3]

    def __getitem__(self, i):
        img, _, caption, label = self._item(i)
        image = normalize_uint8(img) if self.transform is None else self.transform(Image.fromarray(img))
        return image, caption, label

    def get_batch(self, indices) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """一次取一批：``(图像 [B,3,H,W], 标题列表, 类别 LongTensor[B])``，比逐个 __getitem__ 快。"""
        items = [self._item(i) for i in indices]
        if self.transform is None:
            images = normalize_uint8(np.stack([it[0] for it in items]))
        else:
            images = torch.stack([self.transform(Image.fromarray(it[0])) for it in items])
        labels = torch.tensor([it[3] for it in items], dtype=torch.long)
        return images, [it[2] for it in items], labels

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, size={self.size}, image_size={self.image_size}, "
                f"seed={self.seed}, max_objects={self.max_objects})")


def as_index(i, size: int) -> int:
    """把下标规整到 [0, size)：接受 Python/numpy 整数与 0 维整数张量（采样器可能给出任一种），
    支持负下标；其余类型或越界都报错。"""
    try:
        if isinstance(i, bool):
            raise TypeError
        i = operator.index(i)
    except TypeError:
        raise TypeError(f"下标应为整数，实际为 {type(i).__name__} / index must be an int") from None
    if not -size <= i < size:
        raise IndexError(f"下标 {i} 越界；数据集大小为 {size}")
    return i % size


def _check_args(split, size, image_size, seed, max_objects) -> None:
    """参数检查：报错说明期望什么、实际得到什么。"""
    if split not in SPLITS:
        raise ValueError(f"split 应为 {list(SPLITS)} 之一，实际为 {split!r} / unknown split")
    for name, value, low in (("size", size, 1), ("image_size", image_size, 16), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} 应为 ≥{low} 的整数，实际为 {value!r}"
                             + ("；图形在 16 px 以下无法分辨" if name == "image_size" else ""))
    if not isinstance(max_objects, (int, np.integer)) or isinstance(max_objects, bool) or not 1 <= max_objects <= 3:
        raise ValueError(f"max_objects 应为 1–3 的整数，实际为 {max_objects!r}")

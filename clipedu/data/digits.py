"""手写数字 DigitsDataset：scikit-learn 自带的 8×8 手写数字，配中文标题（见第 2 章 sec-pretrain-transfer）。

这是本书唯一的“真实图像”内置数据：1,797 张扫描的手写数字，随 scikit-learn 安装，不需下载。
用途是迁移学习——在几何图形世界上预训练，再到这里比较零样本、线性探测与全量微调。
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .shapes import as_index
from .transforms import normalize_uint8

HANZI_DIGITS = "零一二三四五六七八九"
# {d} 阿拉伯数字，{h} 汉字数字
TEMPLATES = (
    "手写的数字{d}",
    "一个手写的“{h}”",
    "数字 {h} 的图片",
    "数字{d}",
    "一张手写数字{d}的照片",
    "这是数字{h}",
    "手写体的{h}",
    "一个手写的{d}",
    "黑底白字的数字{d}",
    "图中写着{h}",
)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """分层划分：每个类别各自打乱，取 round(比例 × 该类数量) 个作测试集。结果只依赖 seed。"""
    rng = np.random.default_rng([seed, 7])
    train, test = [], []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        idx = idx[rng.permutation(len(idx))]
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _upscale(images8: np.ndarray, image_size: int) -> np.ndarray:
    """8×8、取值 0–16 的灰度图 → 双线性放大到 image_size、3 通道 uint8 [N, S, S, 3]（白字黑底）。"""
    x = torch.from_numpy(images8.astype(np.float32) / 16.0)[:, None]     # (N, 1, 8, 8)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[:, 0]                # (N, S, S)
    return x[..., None].expand(-1, -1, -1, 3).numpy()


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn 手写数字（见第 2 章 sec-pretrain-transfer）。样本为 ``(图像 [3,H,W], 中文标题, 数字)``。

    split 为 "train" 或 "test"，按 seed 做确定性的分层划分；test_fraction 为测试集比例。
    """

    classnames = [f"数字{d}" for d in range(10)]
    classnames_hanzi = [f"数字{h}" for h in HANZI_DIGITS]

    def __init__(self, split: str = "train", image_size: int = 32, seed: int = 0,
                 test_fraction: float = 0.3, transform=None):
        if split not in ("train", "test"):
            raise ValueError(f"split 应为 'train' 或 'test'，实际为 {split!r} / unknown split")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
            raise ValueError(f"image_size 应为 ≥8 的整数，实际为 {image_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed 应为非负整数，实际为 {seed!r}")
        if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction 应在 (0, 1) 之间，实际为 {test_fraction!r}")
        from sklearn.datasets import load_digits  # 随 scikit-learn 安装的本地文件，不联网

        digits = load_digits()
        train_idx, test_idx = stratified_split(digits.target, test_fraction, seed)
        self.indices = train_idx if split == "train" else test_idx   # 在原始 1,797 张中的位置
        self.split, self.image_size, self.seed, self.transform = split, image_size, seed, transform
        self.labels = digits.target[self.indices].astype(np.int64)
        self.images = _upscale(digits.images[self.indices], image_size)  # uint8 [N, S, S, 3]
        # 每个样本固定一个模板（由 seed 决定），整个数据集里各模板都会出现
        rng = np.random.default_rng([seed, 11, 0 if split == "train" else 1])
        self._template = rng.integers(0, len(TEMPLATES), len(self.indices))

    def __len__(self) -> int:
        return len(self.indices)

    def caption(self, i: int) -> str:
        d = int(self.labels[i])
        return TEMPLATES[self._template[i]].format(d=d, h=HANZI_DIGITS[d])

    def __getitem__(self, i):
        i = as_index(i, len(self))
        img = self.images[i]
        image = normalize_uint8(img) if self.transform is None else self.transform(Image.fromarray(img))
        return image, self.caption(i), int(self.labels[i])

    def __repr__(self) -> str:
        return f"DigitsDataset(split={self.split!r}, n={len(self)}, image_size={self.image_size}, seed={self.seed})"

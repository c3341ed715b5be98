"""预训练与迁移的实验工具（见第 2 章 sec-concepts-pretraining 与实验 2.A sec-pretrain-transfer）。

笔记本 02_pretrain_transfer 与 benchmarks/ch2_transfer.py 共用这里的函数，保证两边量的是同一件事：
- ``features``：冻结的图像塔把一批图编码成特征；
- ``linear_probe``：在冻结特征上训练逻辑回归（线性探针），可只取每类 k 个标注；
- ``few_label_indices``：按类别分层抽 k 个标注的下标；
- ``ImageClassifier``：图像塔 + 线性分类头，用于全量微调或从头训练；
- ``shapes_attribute_task``：几何图形世界里按一个属性（颜色、形状、大小、位置）分类的下游任务。
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ..data.shapes import COLORS, POSITIONS, SHAPES, SIZES, ShapesDataset
from ..model import create_model

from .fusion import fit_classifier, predict  # 融合实验的小训练器

# 属性名 → (物体元组里的下标, 类别名)。物体元组为 (颜色, 形状, 大小, 位置)，见 ShapesDataset.objects
ATTRIBUTES = {"颜色": (0, COLORS), "形状": (1, SHAPES), "大小": (2, SIZES), "位置": (3, POSITIONS)}


class ImageClassifier(torch.nn.Module):
    """CLIP 的图像塔 + 线性分类头。特征先 L2 归一化再乘 10，让初始 logits 落在合适的范围。"""

    def __init__(self, clip_model, num_classes: int = 10):
        super().__init__()
        self.clip = clip_model
        self.head = torch.nn.Linear(clip_model.config.embed_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.clip.encode_image(images, normalize=True) * 10)   # (B, num_classes)


@torch.no_grad()
def features(model, images: torch.Tensor, device=None, batch_size: int = 512) -> torch.Tensor:
    """冻结的图像塔：分批编码，返回 CPU 上的 float32 特征 (N, embed_dim)。"""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    return torch.cat([model.encode_image(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def few_label_indices(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """每个类别随机抽 per_class 个样本的下标（分层抽样），只依赖 seed。"""
    if per_class < 1:
        raise ValueError(f"per_class 应为正整数，实际为 {per_class}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c)[:, 0]
        if len(idx) < per_class:
            raise ValueError(f"类别 {c} 只有 {len(idx)} 个样本，不够每类 {per_class} 个（per_class too large）")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picked)


def linear_probe(F_tr: torch.Tensor, y_tr: torch.Tensor, F_te: torch.Tensor, y_te: torch.Tensor,
                 per_class: int | None = None, seed: int = 0) -> float:
    """线性探针：在冻结特征上训练逻辑回归，返回测试准确率。per_class 给定时每类只用这么多个标注。"""
    idx = torch.arange(len(y_tr)) if per_class is None else few_label_indices(y_tr, per_class, seed)
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(F_tr[idx].numpy(), y_tr[idx].numpy())
    return float((clf.predict(F_te.numpy()) == y_te.numpy()).mean())


def shapes_attribute_task(attribute: str, size: int, seed: int = 0, split: str = "test",
                          image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """几何图形世界的下游任务：按一个属性分类单个物体的图。返回 (图像 [N,3,H,W], 标签 [N], 类别名)。

    默认取 "test" 划分：预训练只用 "train" 划分，两者是不同的随机流，下游的图一张也没在预训练里出现过。
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"未知属性 {attribute!r}（unknown attribute）；可选：{'、'.join(ATTRIBUTES)}")
    k, names = ATTRIBUTES[attribute]
    ds = ShapesDataset(split, size=size, image_size=image_size, seed=seed)
    images, _, _ = ds.get_batch(range(size))
    labels = torch.tensor(np.array([ds.objects(i)[0][k] for i in range(size)]), dtype=torch.long)
    return images, labels, list(names)


# 少标注对照实验里比较的四种做法（名字也是结果字典的键）
METHODS = ("预训练 + 线性探针", "预训练 + 全量微调", "从头训练", "随机特征 + 线性探针")


def few_label_comparison(pretrained, data, per_class: int, seeds, steps: int = 60, lr: float = 5e-4,
                         batch_size: int = 32) -> dict[str, list[float]]:
    """每类只有 per_class 个标注时，四种做法（METHODS）在各个种子下的测试准确率。

    data = (X_pool, y_pool, X_test, y_test)：从 X_pool 里按种子抽标注，在 X_test 上测。
    种子同时决定抽到哪些标注和随机初始化；“从头训练”与“全量微调”用同样的网络、步数和学习率，
    只差初始权重，所以两者之差就是预训练带来的东西。
    """
    X_pool, y_pool, X_test, y_test = data
    num_classes = int(y_pool.max()) + 1
    F_pool, F_test = features(pretrained, X_pool), features(pretrained, X_test)
    results = {m: [] for m in METHODS}
    for seed in seeds:
        idx = few_label_indices(y_pool, per_class, seed)
        results["预训练 + 线性探针"].append(linear_probe(F_pool[idx], y_pool[idx], F_test, y_test))
        torch.manual_seed(seed)
        scratch = create_model(pretrained.config)
        R_pool, R_test = features(scratch, X_pool), features(scratch, X_test)
        results["随机特征 + 线性探针"].append(linear_probe(R_pool[idx], y_pool[idx], R_test, y_test))
        for name, base in (("预训练 + 全量微调", _copy_of(pretrained)), ("从头训练", scratch)):
            torch.manual_seed(seed)
            net = ImageClassifier(base, num_classes)
            fit_classifier(net, (X_pool[idx],), y_pool[idx], steps=steps, batch_size=batch_size, lr=lr, seed=seed)
            results[name].append(float((predict(net, (X_test,)) == y_test).float().mean()))
    return results


def _copy_of(model):
    """同结构、同权重的独立副本（微调不改动原模型）。"""
    twin = create_model(model.config).to(next(model.parameters()).device)
    twin.load_state_dict(model.state_dict())
    return twin

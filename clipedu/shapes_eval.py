"""训练中与 ``python -m clipedu eval`` 用的标准评估：几何图形世界的零样本与检索（见第 3 章 sec-zero-shot）。

* ``zero_shot_top1_heldout``：留出的（颜色, 形状）组合的图像，在全部 36 个类别里做零样本分类；
  这些组合训练时一次也没出现，所以它衡量的是“把见过的概念组合起来”的能力；
* ``zero_shot_top1_test``：见过的组合、没见过的图像；
* ``i2t_R@k`` / ``t2i_R@k``：shapes 测试集上的图文检索。
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .evaluate import encode_texts, retrieval_metrics, zero_shot_accuracy, zero_shot_classifier
from .prompts import TEMPLATES


@torch.no_grad()
def _encode_images(model, dataset, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """按批编码图像；ShapesDataset 有 get_batch 快速路径，其余数据集走 __getitem__。"""
    feats, labels, captions = [], [], []
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        if hasattr(dataset, "get_batch"):
            images, caps, y = dataset.get_batch(idx)
        else:
            items = [dataset[i] for i in idx]
            images = torch.stack([it[0] for it in items])
            caps, y = [it[1] for it in items], torch.as_tensor([int(it[2]) for it in items])
        feats.append(model.encode_image(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
        captions.extend(caps)
    return torch.cat(feats), torch.cat(labels), captions


def _prefixed(metrics: dict, suffix: str) -> dict:
    return {f"zero_shot_{k}_{suffix}": v for k, v in metrics.items() if k != "n"}


@torch.no_grad()
def evaluate_shapes(model, tokenizer, image_size: Optional[int] = None, size: int = 1000, seed: int = 0,
                    templates: Optional[Sequence[str]] = None, device=None, batch_size: int = 256,
                    max_objects: int = 1) -> dict:
    """在 shapes 的 heldout/test 划分上评估，返回扁平的指标字典（都是 [0,1] 小数或名次）。"""
    from .data import ShapesDataset

    device = device or next(model.parameters()).device
    image_size = image_size or model.config.vision.image_size
    templates = list(templates or TEMPLATES)
    was_training = model.training
    model.eval()
    try:
        heldout = ShapesDataset("heldout", size=size, image_size=image_size, seed=seed, max_objects=max_objects)
        test = ShapesDataset("test", size=size, image_size=image_size, seed=seed, max_objects=max_objects)
        classifier = zero_shot_classifier(model, tokenizer, heldout.classnames, templates, device=device)
        out = {}
        h_feats, h_labels, _ = _encode_images(model, heldout, batch_size, device)
        out.update(_prefixed(zero_shot_accuracy(h_feats, h_labels, classifier.cpu()), "heldout"))
        t_feats, t_labels, t_caps = _encode_images(model, test, batch_size, device)
        out.update(_prefixed(zero_shot_accuracy(t_feats, t_labels, classifier.cpu()), "test"))
        text_feats = encode_texts(model, tokenizer, t_caps, batch_size=batch_size, device=device)
        out.update(retrieval_metrics(t_feats, text_feats))
    finally:
        model.train(was_training)
    out["eval_size"] = size
    return out


@torch.no_grad()
def evaluate_classification(model, tokenizer, dataset, classnames: Sequence[str], templates: Sequence[str],
                            device=None, batch_size: int = 256) -> dict:
    """任意 ``(image, caption, label)`` 数据集上的零样本分类（eval CLI 的 --dataset 用它）。"""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        classifier = zero_shot_classifier(model, tokenizer, list(classnames), list(templates), device=device)
        feats, labels, _ = _encode_images(model, dataset, batch_size, device)
        metrics = zero_shot_accuracy(feats, labels, classifier.cpu())
    finally:
        model.train(was_training)
    return {f"zero_shot_{k}": v for k, v in metrics.items()}

"""零样本分类与图文检索的指标，以及把数据集编码成特征。

见第 3 章 sec-zero-shot、第 6 章 sec-retrieval。

指标都是纯函数：输入特征，输出指标字典，与 open_clip 的 ``zero_shot_classifier`` 和
检索评估一一对应。在具体数据集上跑评估的“驱动”（shapes、digits、CIFAR、ImageFolder、
cn-clip、训练中的评估）在 ``eval_tasks.py``，都建在这里的函数之上。
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """评估用的上下文：eval 模式（Dropout 关、BatchNorm 用统计量）+ 不记梯度；
    退出时恢复模型原来的 train/eval 状态。"""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def zero_shot_classifier(model, tokenizer, classnames: Sequence[str],
                         templates: Sequence[str], device=None) -> torch.Tensor:
    """用文本塔为每个类别生成分类器权重，返回 ``[D, C]``（见第 3 章 sec-zero-shot）。

    每个类别把所有模板填好后编码，各自 L2 归一化、取平均，再归一化一次（提示集成）。
    """
    if not classnames:
        raise ValueError("classnames 不能为空")
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"每个模板都要含有占位符 '{{}}'，这些没有："
                         f"{bad or '（模板列表为空）'}")
    device = device or _model_device(model)
    weights = []
    with eval_mode(model):
        for name in classnames:
            tokens = tokenizer([t.format(name) for t in templates]).to(device)
            emb = model.encode_text(tokens, normalize=False).float()  # (T, D)
            emb = F.normalize(emb, dim=-1)
            weights.append(F.normalize(emb.mean(dim=0), dim=-1))      # (D,)
    return torch.stack(weights, dim=1)  # (D, C)


def zero_shot_accuracy(image_features: torch.Tensor, labels: torch.Tensor,
                       classifier: torch.Tensor, topk: Sequence[int] = (1, 5)) -> dict:
    """零样本准确率：top-k 与各类召回率的平均（mean per-class recall），均为 [0, 1]。"""
    if (image_features.ndim != 2 or classifier.ndim != 2
            or image_features.shape[1] != classifier.shape[0]):
        raise ValueError(
            f"image_features 应为 (N, D)、classifier 应为 (D, C)，实际为 "
            f"{tuple(image_features.shape)} 与 {tuple(classifier.shape)}"
        )
    labels = labels.to(image_features.device).long()
    if labels.shape != (image_features.shape[0],):
        raise ValueError(f"labels 应为 ({image_features.shape[0]},)，实际为 "
                         f"{tuple(labels.shape)}")
    classifier = classifier.to(image_features.device).float()
    logits = image_features.float() @ classifier  # (N, C)
    C = logits.shape[1]
    ranked = logits.topk(min(max(topk), C), dim=1).indices  # (N, k)
    correct = ranked == labels[:, None]
    out = {f"top{k}": correct[:, :k].any(dim=1).float().mean().item()
           for k in topk if k <= C}
    pred = ranked[:, 0]
    recalls = [(pred[labels == c] == c).float().mean().item()
               for c in labels.unique().tolist()]
    out["mean_per_class_recall"] = sum(recalls) / len(recalls)
    out["n"] = int(labels.numel())
    return out


def _ranks_text_to_image(image_emb, text_emb, text_to_image, chunk_size):
    """每条文本的正确图像排第几（1 起）。"""
    ranks = []
    for start in range(0, text_emb.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        scores = text_emb[rows] @ image_emb.T                  # (c, Ni)
        pos = scores.gather(1, text_to_image[rows, None])      # (c, 1)
        ranks.append((scores > pos).sum(dim=1) + 1)
    return torch.cat(ranks)


def _ranks_image_to_text(image_emb, text_emb, text_to_image, chunk_size):
    """每张图像的“最好的”正确文本排第几：一张图有多条标题时，任一条进前 k 即命中。"""
    has_caption = torch.bincount(text_to_image, minlength=image_emb.shape[0]) > 0
    image_ids = torch.arange(image_emb.shape[0], device=image_emb.device)[has_caption]
    ranks = []
    for start in range(0, image_ids.numel(), chunk_size):
        ids = image_ids[start:start + chunk_size]
        scores = image_emb[ids] @ text_emb.T                   # (c, Nt)
        positive = text_to_image[None, :] == ids[:, None]      # (c, Nt)
        best_pos = scores.masked_fill(~positive, float("-inf"))
        best_pos = best_pos.amax(dim=1, keepdim=True)          # (c, 1)
        ranks.append(((scores > best_pos) & ~positive).sum(dim=1) + 1)
    return torch.cat(ranks)


@torch.no_grad()
def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor,
                      text_to_image: torch.Tensor | None = None,
                      ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024) -> dict:
    """图→文（i2t）与文→图（t2i）检索的 R@k、平均名次与中位名次（sec-retrieval）。

    ``text_to_image[t]`` 是第 t 条文本对应的图像下标；默认一一对应（``arange``）。
    按 ``chunk_size`` 分块计算，内存只需 chunk_size × N，10 万 × 10 万也不会建出整张
    矩阵。没有任何标题的图像不参加 i2t 统计。
    """
    if (image_emb.ndim != 2 or text_emb.ndim != 2
            or image_emb.shape[1] != text_emb.shape[1]):
        raise ValueError(f"特征应为 (Ni, D) 与 (Nt, D)，实际为 "
                         f"{tuple(image_emb.shape)} 与 {tuple(text_emb.shape)}")
    image_emb, text_emb = image_emb.float(), text_emb.to(image_emb.device).float()
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    if text_to_image is None:
        if n_images != n_texts:
            raise ValueError("图像与文本数量不同时必须给出 text_to_image"
                             "（每条文本对应的图像下标）")
        text_to_image = torch.arange(n_texts)
    text_to_image = torch.as_tensor(text_to_image, device=image_emb.device).long()
    if text_to_image.shape != (n_texts,):
        raise ValueError(f"text_to_image 应为 ({n_texts},)，实际为 "
                         f"{tuple(text_to_image.shape)}")
    if text_to_image.numel() and (text_to_image.min() < 0
                                  or text_to_image.max() >= n_images):
        raise ValueError(f"text_to_image 的取值应在 [0, {n_images})")
    args = (image_emb, text_emb, text_to_image, chunk_size)
    out = {}
    for name, ranks in (("i2t", _ranks_image_to_text(*args)),
                        ("t2i", _ranks_text_to_image(*args))):
        ranks = ranks.float()
        for k in ks:
            out[f"{name}_R@{k}"] = (ranks <= k).float().mean().item()
        out[f"{name}_mean_rank"] = ranks.mean().item()
        # 中位名次：偶数个时取中间两数的平均
        out[f"{name}_median_rank"] = ranks.quantile(0.5).item()
    return out


def encode_dataset(model, dataset, batch_size: int = 256, device=None,
                   num_workers: int = 0):
    """``(image, caption, label)`` 数据集 → ``(image_features [N, D], labels [N])``。

    有 ``get_batch`` 的数据集（ShapesDataset）且 num_workers=0 时走它的批量快速路径。
    """
    device = device or _model_device(model)
    if hasattr(dataset, "get_batch") and num_workers == 0:
        batches = (dataset.get_batch(range(i, min(i + batch_size, len(dataset))))
                   for i in range(0, len(dataset), batch_size))
    else:
        batches = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    feats, labels = [], []
    with eval_mode(model):
        for images, _captions, y in batches:
            feats.append(model.encode_image(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)


def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256,
                 device=None) -> torch.Tensor:
    """批量编码文本，返回归一化后的 ``[N, D]``。"""
    device = device or _model_device(model)
    out = []
    with eval_mode(model):
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[i:i + batch_size])).to(device)
            out.append(model.encode_text(tokens).float().cpu())
    return torch.cat(out)

"""评估集入口：``build_eval_dataset(name, root, image_size)``（见第 6 章 sec-zero-shot-real）。

- 零样本分类（``imagefolder``、``cifar10``、``cifar100``）返回 ``(数据集, 中文类名, 中文模板)``，
  数据集样本为 ``(image, 类名, label)``；
- 图文检索（``cn-clip``）返回 ``(RetrievalSet, None, None)``：图像、全部文本、文本→图像下标。
"""
from __future__ import annotations

import os
from typing import Optional

from .shard import add_shard_parser  # noqa: F401  CLI 从这里取 data shard 子命令

EVAL_DATASETS = ("imagefolder", "cifar10", "cifar100", "cn-clip")


def build_eval_dataset(name: str, root: str, image_size: int, *, split: Optional[str] = None,
                       classnames: Optional[dict] = None, templates: Optional[list] = None,
                       strict: bool = False, max_bad_fraction: float = 0.01):
    """按名字构建评估集；``classnames`` 只用于 imagefolder（文件夹名 → 中文名）。

    ``split``：cifar 为 "test"（默认）或 "train"；cn-clip 默认 "valid"，没有时用 "test"。
    """
    from . import eval_transform
    from .folders import CIFAR_TEMPLATES, CifarZh, ImageFolderZh
    from ..prompts import TEMPLATES

    if not root:
        raise ValueError(f"评估集 {name!r} 需要本地目录，请加 --root DIR")
    transform = eval_transform(image_size)
    if name in ("cifar10", "cifar100"):
        if split not in (None, "test", "train"):
            raise ValueError(f"CIFAR 的 split 应为 'test' 或 'train'，实际为 {split!r}")
        ds = CifarZh(name, root, train=split == "train", transform=transform)
        return ds, ds.classnames, list(templates or CIFAR_TEMPLATES)
    if name == "imagefolder":
        ds = ImageFolderZh(root, transform=transform, classnames=classnames, strict=strict,
                           max_bad_fraction=max_bad_fraction)
        return ds, ds.classnames, list(templates or TEMPLATES)
    if name == "cn-clip":
        from .cnclip import load_retrieval_set
        if split is None:
            split = "valid" if os.path.isfile(os.path.join(os.path.expanduser(root), "valid_texts.jsonl")) else "test"
        rs = load_retrieval_set(root, split, transform=transform, strict=strict, max_bad_fraction=max_bad_fraction)
        return rs, None, None
    raise ValueError(f"未知评估集 {name!r}；可选：{', '.join(EVAL_DATASETS)} / unknown eval dataset")


def evaluate_eval_set(model, tokenizer, name: str, root: str, strict: bool = False,
                      max_bad_fraction: float = 0.01) -> dict:
    """eval 命令的真实数据分支：建评估集、评估，并报告跳过的坏样本（``bad_samples``、``bad_samples_by_reason``）。

    坏图被另一张好图替换，所以指标仍在完整的 N 个样本上算；坏样本比例超过 ``max_bad_fraction`` 时报错。
    """
    from ..shapes_eval import evaluate_classification

    ds, classnames, templates = build_eval_dataset(name, root, model.config.vision.image_size, strict=strict,
                                                   max_bad_fraction=max_bad_fraction)
    if classnames is None:  # 图文检索集（如 cn-clip）没有类别
        metrics = evaluate_retrieval(model, tokenizer, ds)
        counter = ds.bad_samples
    else:
        metrics = evaluate_classification(model, tokenizer, ds, classnames, templates)
        counter = ds.bad_samples()
    counter.check(force=True)
    return {**metrics, "bad_samples": counter.bad, "bad_samples_by_reason": dict(sorted(counter.counts.items()))}


def evaluate_retrieval(model, tokenizer, rs, batch_size: int = 256, device=None) -> dict:
    """在 RetrievalSet 上算图文检索指标（i2t/t2i 的 R@1/5/10 与名次），附上坏样本统计。"""
    from ..evaluate import encode_dataset, encode_texts, retrieval_metrics

    image_emb, _ = encode_dataset(model, rs.images, batch_size=batch_size, device=device)
    text_emb = encode_texts(model, tokenizer, rs.captions, batch_size=batch_size, device=device)
    metrics = retrieval_metrics(image_emb, text_emb, rs.text_to_image)
    return {**metrics, "n_images": len(rs.images), "n_texts": len(rs.captions),
            "bad_samples": rs.bad_samples.bad}


__all__ = ["EVAL_DATASETS", "add_shard_parser", "build_eval_dataset", "evaluate_eval_set", "evaluate_retrieval"]

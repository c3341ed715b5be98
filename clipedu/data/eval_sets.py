"""评估集入口 ``build_eval_dataset``（见第 6 章 sec-zero-shot-real）。

- 零样本分类（``imagefolder``、``cifar10``、``cifar100``）返回
  ``(数据集, 中文类名, 中文模板)``，数据集样本为 ``(image, 类名, label)``；
- 图文检索（``cn-clip``）返回 ``(RetrievalSet, None, None)``：图像、全部文本、
  文本→图像下标。

在这些数据集上评估的函数在 ``clipedu.eval_tasks``（``evaluate_classification``、
``evaluate_retrieval``）。
"""
from __future__ import annotations

import os
from typing import Optional

EVAL_DATASETS = ("imagefolder", "cifar10", "cifar100", "cn-clip")


def build_eval_dataset(name: str, root: str, image_size: int, *,
                       split: Optional[str] = None, classnames: Optional[dict] = None,
                       templates: Optional[list] = None, strict: bool = False,
                       max_bad_fraction: float = 0.01):
    """按名字构建评估集；``classnames`` 只用于 imagefolder（文件夹名 → 中文名）。

    ``split``：cifar 为 "test"（默认）或 "train"；cn-clip 默认 "valid"，
    没有 valid 时用 "test"。
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
        ds = ImageFolderZh(root, transform=transform, classnames=classnames,
                           strict=strict, max_bad_fraction=max_bad_fraction)
        return ds, ds.classnames, list(templates or TEMPLATES)
    if name == "cn-clip":
        from .cnclip import load_retrieval_set
        if split is None:
            has_valid = os.path.isfile(os.path.join(os.path.expanduser(root),
                                                    "valid_texts.jsonl"))
            split = "valid" if has_valid else "test"
        rs = load_retrieval_set(root, split, transform=transform, strict=strict,
                                max_bad_fraction=max_bad_fraction)
        return rs, None, None
    raise ValueError(f"未知评估集 {name!r}；可选：{', '.join(EVAL_DATASETS)} "
                     f"/ unknown eval dataset")


__all__ = ["EVAL_DATASETS", "build_eval_dataset"]

"""按 TrainConfig 构建训练数据集：一个入口，五种来源（见第 5 章 sec-code-data）。

训练器只调用 ``build_train_dataset(cfg, image_size)``，不关心数据从哪里来。
每个样本都是 ``(image, caption, label)``；没有类别的真实数据 label 为 -1。
批处理请用 ``clipedu.data.robust.collate``：它同时把坏样本计数带回主进程。
"""
from __future__ import annotations

import os

from torch.utils.data import Dataset, IterableDataset

from ..config import TrainConfig

from ..config import TRAIN_DATASETS  # noqa: E402  一份名单：配置校验与这里共用


def _need_path(cfg: TrainConfig) -> str:
    """真实数据必须给出本地路径。"""
    if not cfg.data_path:
        raise ValueError(
            f"数据集 {cfg.dataset!r} 需要本地路径，但 data_path 为空；"
            "请在命令行加 --data-path PATH（csv/tsv 文件、Chinese-CLIP 目录或 wds 分片）"
        )
    return os.path.expanduser(cfg.data_path)


def build_train_dataset(cfg: TrainConfig, image_size: int) -> Dataset | IterableDataset:
    """按 ``cfg.dataset`` 返回训练集。

    shapes/digits/csv/cn-clip 为 map 式，wds 为流式。
    """
    name = cfg.dataset
    if name == "shapes":
        from . import ShapesDataset
        return ShapesDataset(
            split="train", image_size=image_size, seed=cfg.seed,
            max_objects=cfg.max_objects,
        )
    if name == "digits":
        from . import DigitsDataset
        return DigitsDataset(split="train", image_size=image_size, seed=cfg.seed)
    if name == "csv":
        from .csv import CsvDataset
        from . import train_transform
        return CsvDataset(
            _need_path(cfg), transform=train_transform(image_size),
            img_key=cfg.csv_img_key, caption_key=cfg.csv_caption_key,
            sep=cfg.csv_separator, encoding=cfg.encoding,
            strict=cfg.strict, max_bad_fraction=cfg.max_bad_fraction,
        )
    if name == "cn-clip":
        from .cnclip import CnClipDataset
        from . import train_transform
        return CnClipDataset(
            _need_path(cfg), split="train", transform=train_transform(image_size),
            strict=cfg.strict, max_bad_fraction=cfg.max_bad_fraction,
        )
    if name == "wds":
        from .wds import build_wds_dataset
        from . import train_transform
        return build_wds_dataset(
            _need_path(cfg), transform=train_transform(image_size), seed=cfg.seed,
            strict=cfg.strict, max_bad_fraction=cfg.max_bad_fraction,
        )
    choices = ", ".join(TRAIN_DATASETS)
    raise ValueError(f"未知数据集 {name!r}；可选：{choices} / unknown dataset")


__all__ = ["build_train_dataset", "TRAIN_DATASETS"]

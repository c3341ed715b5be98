"""随机种子：整个库只在这里设种子（见第 5 章 sec-code-resume）。

笔记本开场（``setup_notebook``）、建模型前与每个训练进程都调用同一个
``seed_everything``；多进程时各进程的种子由 ``rank_seed`` 从运行种子派生。
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> None:
    """同时设定 Python、NumPy 和 PyTorch（含所有 GPU）的随机种子。"""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed 应为整数，实际为 {type(seed).__name__}：{seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # 也会为所有 CUDA 设备设定种子


def rank_seed(seed: int, rank: int) -> int:
    """各进程的种子：数据增强在进程间互不相同，整个运行仍可复现。"""
    return seed + 1_000_003 * rank


__all__ = ["seed_everything", "rank_seed"]

"""优化器与学习率日程：AdamW 参数分组 + 线性预热与余弦衰减（见第 5 章 sec-code-optim）。"""
from __future__ import annotations

import math

import torch

# 投影头与温度：微调时常给它们更大的学习率（head_lr_mult）
HEAD_PARAM_NAMES = ("visual.proj", "text_projection", "logit_scale")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """增益、偏置（一维参数）、各种嵌入与 logit_scale 不做权重衰减。

    权重衰减把参数往 0 拉；对 LayerNorm 增益、偏置和位置嵌入这样做没有正则化意义，
    只会损害表达；logit_scale 被拉向 0 则等于把温度推高，和学习目标直接冲突。
    """
    return param.ndim < 2 or "embedding" in name or "logit_scale" in name


def is_head_param(name: str) -> bool:
    return name in HEAD_PARAM_NAMES or name.startswith("visual.attnpool.c_proj")


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                 head_lr_mult: float = 1.0, image_lr_mult: float = 1.0) -> list[dict]:
    """按（是否衰减 × 是否投影头 × 是否图像塔）把可训练参数分组；空组不出现。

    image_lr_mult ≠ 1 时图像塔（投影头除外）单独成组：微调预训练模型时给两座塔
    不同的学习率。
    """
    groups: dict[tuple[bool, bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # 例如 lock_image 冻结的图像塔
        head = is_head_param(name)
        image = image_lr_mult != 1.0 and name.startswith("visual.") and not head
        key = (no_weight_decay(name, p), head, image)
        if key not in groups:
            groups[key] = {
                "params": [], "names": [],
                "weight_decay": 0.0 if key[0] else weight_decay,
                "lr": lr * (head_lr_mult if head else image_lr_mult if image else 1.0),
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError("模型没有可训练的参数；请检查 lock_image 等冻结设置 / no trainable parameters")
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """AdamW；在 CUDA 上用 fused 内核（一次 kernel 更新全部参数，省去上百次小 kernel 启动）。"""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult,
                          cfg.image_lr_mult)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """学习率倍数：前 warmup_steps 步从 1/warmup 线性升到 1，之后余弦降到 0。

    预热让 Adam 的二阶矩估计先稳定下来，再用大学习率；余弦衰减在末段把步子收小。
    """
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR 包装 warmup_cosine；它的 state_dict 只有步数，能安全地存进检查点。"""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, cfg.steps))

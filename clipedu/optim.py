"""优化器与学习率日程：AdamW 参数分组 + 线性预热与余弦衰减，可跟随时间预算（见第 5 章 sec-code-optim）。"""
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


def adamw(params, device: torch.device | str, **kwargs) -> torch.optim.AdamW:
    """torch 的 AdamW，在 CPU 与 CUDA 上用 fused 内核：一次调用更新全部参数。

    数学上与逐个张量的默认实现相同（tests/test_optim.py 逐步核对），只是快：CUDA 上省去
    上百次小 kernel 启动；CPU 上（torch ≥ 2.4）tiny-cpu 的一次更新从 18 ms 降到 5 ms，
    约占整步的 10%（benchmarks/results/tiny_cpu_quality.md）。其他设备（如 mps）用默认实现。
    """
    fused = torch.device(device).type in ("cuda", "cpu")
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def build_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """训练 CLIP 用的 AdamW：按 ``param_groups`` 分组，超参数取自 TrainConfig。"""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult,
                          cfg.image_lr_mult)
    return adamw(groups, device, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


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


class BudgetCosine:
    """按“步数进度”与“时间进度”中较快的一个走余弦日程（见第 5 章 sec-time-budget）。

    只按步数排日程时，``--time-budget`` 会在学习率还很高时把训练掐断
    （2 核上 120 s 只走得完 1000 步日程的三分之一多，学习率停在峰值的约 75%）。
    这里在预热结束后记下时刻 e0 与当时的余弦进度 q0，此后

        时间进度 = q0 + (1 − q0) · (elapsed − e0) / (time_budget − e0)
        余弦进度 = max(步数进度, 时间进度)

    所以先到的那个上限（步数或时间）恰好把学习率降到 0。续训时 q0 是续训那一刻的进度，
    学习率从原处接着降，不会跳回峰值。没有 time_budget 时与 ``warmup_cosine`` 完全相同。
    """

    def __init__(self, warmup_steps: int, total_steps: int,
                 time_budget: float | None = None):
        if time_budget is not None and not time_budget >= 0:
            raise ValueError(f"time_budget 应为非负的秒数或 None，实际为 "
                             f"{time_budget!r} / bad time_budget")
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.time_budget = None if time_budget is None else float(time_budget)
        # 最近一次 observe 的已用时间（秒）
        self.elapsed = 0.0
        # (e0, q0)：本进程第一次在预热之后观察到的时刻与进度
        self._start = None
        # (第一次观察的步数, 时刻, 最近一次观察的步数)：用来估计每步用时
        self._obs = None

    def step_progress(self, step: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        return min(1.0, max(0.0, (step - self.warmup_steps) / span))

    def observe(self, step: int, elapsed: float) -> None:
        """训练循环每步报告一次：已完成的步数与从训练开始算起的秒数
        （与时间预算用同一只表）。"""
        self.elapsed = float(elapsed)
        if self._obs is None:
            self._obs = (step, self.elapsed, step)
        else:
            self._obs = (self._obs[0], self._obs[1], step)
        after_warmup = step >= self.warmup_steps
        if self._start is None and after_warmup and self.time_budget is not None:
            self._start = (self.elapsed, self.step_progress(step))

    def _elapsed_at(self, step: int) -> float:
        """第 step 步开始时的已用时间：最近一次观察之后的步按实测的平均每步用时外推。

        LambdaLR 在一步结束时就算好下一步的学习率，那时还没有下一步的时刻；不外推的话，
        学习率总比时间落后一步，步子慢（相对预算）时最后几步退火不到位。
        """
        if self._obs is None:
            return self.elapsed
        first_step, first_elapsed, last_step = self._obs
        per_step = 0.0
        if last_step > first_step:
            per_step = (self.elapsed - first_elapsed) / (last_step - first_step)
        return self.elapsed + max(0, step - last_step) * per_step

    def progress(self, step: int) -> float:
        """余弦部分的进度 q ∈ [0, 1]；q = 1 时学习率为 0。"""
        q = self.step_progress(step)
        if self._start is not None:
            e0, q0 = self._start
            span = self.time_budget - e0
            if span <= 0:
                q_time = 1.0
            else:
                q_time = q0 + (1.0 - q0) * (self._elapsed_at(step) - e0) / span
            q = max(q, min(1.0, q_time))
        return q

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR 包装 BudgetCosine；日程对象挂在 lambda 函数上（``lr_lambdas[0].schedule``）。

    传给 LambdaLR 的是普通函数，所以它的 state_dict 只有步数，能安全地存进检查点；
    日程里与墙钟有关的状态属于本进程，不进检查点。
    """
    schedule = BudgetCosine(cfg.warmup_steps, cfg.steps, getattr(cfg, "time_budget", None))

    def lr_factor(step: int) -> float:
        return schedule(step)

    lr_factor.schedule = schedule
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def observe_time(scheduler, step: int, elapsed: float) -> None:
    """把已完成的步数与已用时间告诉 build_scheduler 建的日程；别的调度器原样忽略。"""
    for fn in getattr(scheduler, "lr_lambdas", ()):
        schedule = getattr(fn, "schedule", None)
        if isinstance(schedule, BudgetCosine):
            schedule.observe(step, elapsed)

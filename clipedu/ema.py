"""参数的指数滑动平均 EMA（exponential moving average，见第 5 章 sec-time-budget）。

每个优化器步之后做一次

    θ̄ ← ρ_n·θ̄ + (1 − ρ_n)·θ，    ρ_n = min(ρ, (1 + n) / (10 + n))，

θ 是正在训练的参数，θ̄ 是平均后的参数，n 是已经做过的更新次数（从 0 数起）。第一次更新时
ρ_0 = 0.1，θ̄ 几乎就是 θ，随机初始化不会留在平均里；ρ_n 随 n 增大趋近上限 ρ（``decay``）。
平均大约覆盖最近 1/(1 − ρ_n) 步：短训练里这大约是最近 n/9 步，长训练里是最近 1/(1 − ρ) 步。

评估与导出用 θ̄，续训时 θ 与 θ̄ 都要保存（检查点的 ``model`` 与 ``train_state.raw_model``，
见 ``checkpoint.training_checkpoint``）。θ̄ 总是以 float32 保存：参数是 bf16 时，
(1 − ρ)·(θ − θ̄) 这样小的增量在 bf16 里会被舍掉。
"""
from __future__ import annotations

import copy

import torch


def ema_decay_at(decay: float, updates: int) -> float:
    """第 ``updates`` 次更新（从 0 数起）用的 ρ_n = min(ρ, (1 + n) / (10 + n))。"""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class ModelEMA:
    """``ModelEMA(model, decay)``：``update(model)`` 每步调用一次，``module`` 是平均后的模型。

    缓冲区（BatchNorm 的统计量等）直接复制当前值，不做平均。``module`` 不求梯度，
    始终处于 eval 模式。
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA 衰减率 decay 应在 (0, 1) 内，实际为 {decay} / invalid ema decay")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).float().eval().requires_grad_(False)
        self._params = list(self.module.parameters())  # 每步都要用：只取一次

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> float:
        """θ̄ ← ρ_n·θ̄ + (1 − ρ_n)·θ；返回这一次用的 ρ_n。"""
        rho = ema_decay_at(self.decay, self.updates)
        theirs = [p.detach().float() for p in model.parameters()]
        if len(self._params) != len(theirs):
            raise ValueError("EMA 与模型的参数个数不同 / ema does not match model")
        # lerp(θ̄, θ, 1 − ρ) = θ̄ + (1 − ρ)(θ − θ̄) = ρ·θ̄ + (1 − ρ)·θ
        torch._foreach_lerp_(self._params, theirs, 1.0 - rho)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1
        return rho

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict, updates: int) -> None:
        from .checkpoint import load_state_dict_checked

        load_state_dict_checked(self.module, state)
        self.updates = int(updates)


__all__ = ["ModelEMA", "ema_decay_at"]

"""torch.distributed 的小工具（见第 5 章 sec-scale-up）。

单进程时这些函数都退化为平凡情形，所以同一份训练代码既能在笔记本电脑上跑，也能用
``torchrun`` 在多卡多机上跑。
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """是否处于已初始化的多进程环境。"""
    return dist.is_available() and dist.is_initialized()


def world_info() -> tuple[int, int]:
    """返回 (rank, world_size)；未初始化时为 (0, 1)。"""
    if is_dist():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """只有 0 号进程写日志、存检查点。"""
    return world_info()[0] == 0


def init_from_env(device_type: str) -> tuple[int, int, int]:
    """按 torchrun 设置的环境变量初始化进程组，返回 (rank, local_rank, world_size)。

    CUDA 用 NCCL，CPU 用 gloo。没有 ``WORLD_SIZE`` 或其值为 1 时不初始化。
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 0, 1
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world_size} 但缺少环境变量 {key}；请用 torchrun 启动多进程训练")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if not is_dist():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    if dist.get_world_size() != world_size:
        raise RuntimeError(f"进程组大小 {dist.get_world_size()} 与 WORLD_SIZE={world_size} 不一致")
    return rank, local_rank, world_size


class _GatherWithGrad(torch.autograd.Function):
    """可求导的 all_gather。

    前向：把各进程的 (B_local, D) 拼成 (world_size * B_local, D)。
    反向：每个进程都对整块拼接结果求了梯度，本进程那一段特征影响了所有进程的损失，
    所以先把各进程的梯度求和（all_reduce），再切出属于自己的那一段。
    """

    @staticmethod
    def forward(ctx, x):
        rank, world_size = world_info()
        ctx.rank, ctx.B = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.B:(ctx.rank + 1) * ctx.B]


def all_gather_features(x: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """把所有进程的 ``x``（形状相同）沿第 0 维拼起来，按 rank 顺序。

    ``with_grad=True``：反向传播把各进程对同一块特征的梯度求和送回它的主人，于是经 DDP
    平均后，每个进程的参数梯度与单进程在整批上计算的结果一致。
    ``with_grad=False``：别的进程的特征被当作常数，只有本进程那一块带梯度（省通信，梯度近似）。
    """
    rank, world_size = world_info()
    if world_size == 1:
        return x
    if with_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # 本进程那一块保留计算图
    return torch.cat(parts, dim=0)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """跨进程求平均（用于日志里的损失），不参与求导。"""
    if not is_dist():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()

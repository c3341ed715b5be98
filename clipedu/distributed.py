"""设备与进程组，以及跨进程收集特征的小工具（见第 5 章 sec-scale-up）。

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


def resolve_device(name: str) -> torch.device:
    """"auto" 有 GPU 用 GPU；显式要 cuda 却没有 GPU 时给出清楚的错误。"""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("要求 --device cuda，但这台机器上没有可用的 CUDA GPU；"
                         "请改用 --device cpu / CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}：这台机器只有 {torch.cuda.device_count()} 块 GPU"
                         f"（编号从 0 起） / no such GPU")
    return device


def _launch_env() -> tuple[int, int, int]:
    """读 torchrun 的环境变量，返回 (rank, local_rank, world_size)；不自洽时报错。"""
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise ValueError(f"环境变量 WORLD_SIZE 应为正整数，实际为 {world!r}")
    world_size = int(world)
    if world_size == 1:
        return 0, 0, 1
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world}，但缺少环境变量 {missing}；多进程训练"
                         f"请用 torchrun 启动 / inconsistent distributed environment")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} 不在 [0, WORLD_SIZE={world}) 内；"
                         f"请检查 torchrun 的 --nnodes/--node_rank")
    return rank, local_rank, world_size


def init_distributed(device_name: str) -> tuple[torch.device, int, int]:
    """选设备、按 torchrun 的环境变量建进程组，返回 (device, rank, world_size)。

    CUDA 用 NCCL，CPU 用 gloo；没有 ``WORLD_SIZE`` 或其值为 1 时不建进程组。
    进程组已由调用者建好时（例如测试里的 ``init_process_group``）直接沿用。
    """
    device = resolve_device(device_name)
    rank, local_rank, world_size = _launch_env()
    if world_size == 1:
        return device, 0, 1
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local > torch.cuda.device_count():
            n_gpu = torch.cuda.device_count()
            raise ValueError(f"每台机器起了 {local} 个进程，但只有 {n_gpu} 块 GPU；"
                             f"请把 --nproc_per_node 设为不超过 GPU 数")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not is_dist():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != world_size:
        raise RuntimeError(f"进程组大小 {dist.get_world_size()} 与 "
                           f"WORLD_SIZE={world_size} 不一致")
    return device, rank, world_size


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
    """把所有进程的 ``x``（形状相同）沿第 0 维按 rank 顺序拼起来。

    ``with_grad=True``：反向时把各进程对同一块特征的梯度求和送回它的主人。
    ``with_grad=False``：别的进程的那几块是常数，只有本进程那一块带梯度；
    两种做法对训练的确切影响见 ``loss.ClipLoss``。
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


def all_gather_objects(obj) -> list:
    """收集各进程的一个 Python 对象（如随机数状态），按 rank 排好；单进程时为 [obj]。"""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_flags(flags: tuple[bool, ...], device: torch.device) -> tuple[bool, ...]:
    """0 号进程的几个决定（例如“时间到了”“收到了 SIGTERM”）一次广播给所有进程，让大家在同一步停下。"""
    if not is_dist():
        return tuple(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.broadcast(t, src=0)
    return tuple(bool(v) for v in t.tolist())


def barrier() -> None:
    """多进程时等所有进程到齐；单进程时什么也不做。"""
    if is_dist():
        dist.barrier()

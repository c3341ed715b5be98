"""训练前的准备与续训：设备、进程组、模型、优化器、检查点内容与数据流（见第 5 章 sec-code-train）。

``train.py`` 里的循环只调用这里的函数；读训练代码时先读 ``train.py``，需要细节再来这里。
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from .checkpoint import (FORMAT, VERSION, find_latest, load_checkpoint, load_state_dict_checked,
                         rng_state, rotate_checkpoints, save_checkpoint, set_rng_state)
from .config import CLIPConfig, TrainConfig
from .distributed import init_from_env, is_dist
from .loss import ClipLoss
from .optim import build_optimizer, build_scheduler
from .precision import build_precision, prepare_model
from .sampler import GlobalBatchSampler
from .tokenizer import ChineseTokenizer


@dataclass
class TrainState:
    """训练循环的全部可变状态；检查点保存的就是它。"""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    model_config: CLIPConfig
    raw_model: torch.nn.Module          # 未被 DDP/compile 包装的模型：保存它的 state_dict
    model: torch.nn.Module              # 前向用的模型（可能是 DDP(compile(raw))）
    tokenizer: ChineseTokenizer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: Any
    loss_fn: torch.nn.Module
    step: int = 0                       # 已完成的优化器步数
    samples_seen: int = 0               # 已消耗的全局样本数（数据位置）
    bad: Any = None                     # 坏样本计数器（真实数据）
    last_eval: dict = field(default_factory=dict)


# ---------------------------------------------------------------- 准备
def resolve_device(name: str) -> torch.device:
    """"auto" 有 GPU 用 GPU；显式要 cuda 却没有 GPU 时给出清楚的错误。"""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("要求 --device cuda，但这台机器上没有可用的 CUDA GPU；请改用 --device cpu")
    return device


def check_config(cfg: TrainConfig, world_size: int) -> None:
    """训练开始前检查批大小与进程数、累积步数是否相容，免得跑到一半才出错。"""
    if cfg.steps < 1:
        raise ValueError(f"steps 应为正整数，实际为 {cfg.steps}")
    if cfg.accum_steps < 1:
        raise ValueError(f"accum_steps 应 ≥ 1，实际为 {cfg.accum_steps}")
    if cfg.batch_size % (world_size * cfg.accum_steps) != 0:
        raise ValueError(
            f"全局批大小 {cfg.batch_size} 不能被 进程数 {world_size} × 累积步数 {cfg.accum_steps} "
            f"= {world_size * cfg.accum_steps} 整除；每个进程每个微批需要相同的样本数。"
            f"请把 --batch-size 改成 {world_size * cfg.accum_steps} 的倍数 / batch not divisible"
        )


def check_launch_env(device: torch.device) -> None:
    """torchrun 的环境变量是否自洽：WORLD_SIZE>1 却缺 RANK 等，或每机进程数多于 GPU 数。"""
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise ValueError(f"环境变量 WORLD_SIZE 应为正整数，实际为 {world!r}")
    if int(world) == 1:
        return
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world}，但缺少环境变量 {missing}；多进程训练请用 torchrun 启动 / "
                         f"inconsistent distributed environment")
    rank = int(os.environ["RANK"])
    if not 0 <= rank < int(world):
        raise ValueError(f"RANK={rank} 不在 [0, WORLD_SIZE={world}) 内；请检查 torchrun 的 --nnodes/--node_rank")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cuda" and local > torch.cuda.device_count():
        raise ValueError(f"每台机器起了 {local} 个进程，但只有 {torch.cuda.device_count()} 块 GPU；"
                         f"请把 --nproc_per_node 设为不超过 GPU 数")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """各进程的种子由运行种子派生：不同进程的数据增强互不相同，整个运行仍可复现。"""
    return seed + 1_000_003 * rank


def _init_weights_from(path: str):
    """--init-from：返回 (模型配置, 权重, 分词器)。

    clipedu 检查点原样载入；OpenAI/open_clip 权重（.safetensors、state dict、TorchScript）由
    clipedu.pretrained 读出。英文权重的词表（49408 个 BPE 词元）与 ChineseTokenizer 不同，所以
    像 Chinese-CLIP 那样：保留形状相符的全部权重（整个图像塔与文本 Transformer），换成中文词表，
    只有 ``token_embedding`` 按新词表重新初始化。常与 ``--lock-image`` 一起用（见第 9 章 faq-finetune）。
    """
    from .pretrained import _is_torchscript, infer_config, read_state_dict

    if not (str(path).endswith(".safetensors") or _is_torchscript(str(path))):
        ckpt = load_checkpoint(path)
        if ckpt.get("format") == FORMAT:
            return (CLIPConfig.from_dict(ckpt["config"]), ckpt["model"],
                    ChineseTokenizer.from_state_dict(ckpt["tokenizer"]))
    sd = read_state_dict(str(path))
    config = infer_config(sd)
    tokenizer = ChineseTokenizer(context_length=config.text.context_length)
    if config.text.vocab_size != tokenizer.vocab_size:
        config.text.vocab_size, config.text.eos_token_id = tokenizer.vocab_size, tokenizer.eos_id
        sd = {k: v for k, v in sd.items() if k != "token_embedding.weight"}
        print(f"--init-from {path}：英文词表换成中文词表，token_embedding 重新初始化，其余权重照搬", flush=True)
    own = set(_expected_keys(config))
    return config, {k: v.float() if v.is_floating_point() else v for k, v in sd.items() if k in own}, tokenizer


def _expected_keys(config: CLIPConfig) -> list[str]:
    from .model import CLIP

    with torch.device("meta"):
        return list(CLIP(config).state_dict())


def build_model(cfg: TrainConfig, resume_ckpt: Optional[dict]):
    """建模型与分词器：续训时用检查点里的配置，--init-from 时载入权重，否则用预设随机初始化。"""
    from .model import CLIP

    state, tokenizer = None, None
    if resume_ckpt is not None:
        model_config = CLIPConfig.from_dict(resume_ckpt["config"])
        tokenizer = ChineseTokenizer.from_state_dict(resume_ckpt["tokenizer"])
    elif cfg.init_from:
        model_config, state, tokenizer = _init_weights_from(cfg.init_from)
    else:
        model_config = cfg.model_config()
    seed_everything(cfg.seed)  # 所有进程用同一个种子初始化，参数一开始就一致
    model = CLIP(model_config)
    if state is not None:
        # 从英文权重初始化时 token_embedding 按中文词表重建，其余键必须齐全且形状一致
        load_state_dict_checked(model, state, strict="token_embedding.weight" in state)
    if tokenizer is None:
        tokenizer = ChineseTokenizer(context_length=model_config.text.context_length)
    if cfg.lock_image:
        for p in model.visual.parameters():
            p.requires_grad_(False)  # LiT：图像塔冻结，只训文本塔
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model, model_config, tokenizer


def wrap_model(raw: torch.nn.Module, cfg: TrainConfig, device: torch.device, world_size: int):
    """DDP 与 torch.compile 包装；raw 保持不变，保存时用它，键名不带 module./_orig_mod. 前缀。"""
    model = raw
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return model


def set_train_mode(raw: torch.nn.Module, cfg: TrainConfig) -> None:
    raw.train()
    if cfg.lock_image:
        raw.visual.eval()  # 冻结的塔也不更新 BatchNorm 统计量（ResNet）


def build_state(cfg: TrainConfig, train_dataset=None) -> tuple[TrainState, Any, Optional[dict]]:
    """建好训练所需的一切；需要续训时恢复检查点。返回 (state, 数据集, 检查点)。"""
    device = resolve_device(cfg.device)
    check_launch_env(device)
    rank, local_rank, world_size = init_from_env(device.type)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
    check_config(cfg, world_size)
    ckpt = _find_resume(cfg)
    raw, model_config, tokenizer = build_model(cfg, ckpt)
    precision = build_precision(cfg.precision, device)
    raw = prepare_model(raw, precision)
    optimizer = build_optimizer(raw, cfg, device)
    state = TrainState(
        cfg=cfg, device=device, rank=rank, world_size=world_size, model_config=model_config,
        raw_model=raw, model=wrap_model(raw, cfg, device, world_size), tokenizer=tokenizer,
        optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg), precision=precision,
        loss_fn=ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad),
    )
    if train_dataset is None:
        from .data.factory import build_train_dataset
        train_dataset = build_train_dataset(cfg, model_config.vision.image_size)
    from .data.robust import BadSampleCounter
    state.bad = BadSampleCounter.for_dataset(train_dataset, cfg.max_bad_fraction)
    seed_everything(rank_seed(cfg.seed, rank))
    if ckpt is not None:
        restore_train_state(state, ckpt)
    return state, train_dataset, ckpt


# ---------------------------------------------------------------- 续训
def _find_resume(cfg: TrainConfig) -> Optional[dict]:
    """--resume latest 取输出目录里最新的检查点（没有就从头训练）；--resume PATH 必须存在。"""
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        path = find_latest(cfg.out_dir)
        if path is None:
            print(f"[clipedu] --resume latest：{cfg.out_dir} 里还没有检查点，从头开始训练")
            return None
    else:
        path = Path(cfg.resume)
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != FORMAT or "train_state" not in ckpt:
        raise ValueError(f"{path} 不是可续训的 clipedu 检查点（缺少 train_state）；微调请用 --init-from")
    from .outdir import check_resume_config  # [hardening] 另一个预设/形状的检查点被拒绝，并说出差异
    check_resume_config(cfg, ckpt, path)
    return ckpt


def restore_train_state(state: TrainState, ckpt: dict) -> None:
    """恢复模型、优化器、日程、GradScaler、步数、数据位置与本进程的随机数状态。"""
    ts = ckpt["train_state"]
    load_state_dict_checked(state.raw_model, ckpt["model"])
    state.optimizer.load_state_dict(ts["optimizer"])
    state.scheduler.load_state_dict(ts["scheduler"])
    if state.precision.scaler is not None and ts.get("scaler"):
        state.precision.scaler.load_state_dict(ts["scaler"])
    state.step, state.samples_seen = int(ts["step"]), int(ts["samples_seen"])
    if ts.get("bad_samples"):
        state.bad.seen = int(ts["bad_samples"]["seen"])
        state.bad.counts.update(ts["bad_samples"]["by_reason"])
    rngs = ts.get("rng") or []
    if int(ts.get("world_size", 1)) == state.world_size and state.rank < len(rngs):
        set_rng_state(rngs[state.rank])
    else:  # 进程数变了：各进程旧的随机数状态对不上，改用由种子与步数派生的新状态
        seed_everything(rank_seed(state.cfg.seed + state.step, state.rank))


def checkpoint_dict(state: TrainState) -> dict:
    """检查点内容（只有张量与纯 Python 数据）。所有进程都要调用：要收集各进程的随机数状态。"""
    rngs = [rng_state()]
    if is_dist():
        rngs = [None] * state.world_size
        dist.all_gather_object(rngs, rng_state())
    scaler = state.precision.scaler
    cfg_dict = dataclasses.asdict(state.cfg)
    return {
        "format": FORMAT, "version": VERSION,
        "model": state.raw_model.state_dict(),
        "tokenizer": state.tokenizer.state_dict(),
        "config": state.model_config.to_dict(),
        "train_config": cfg_dict,
        "train_state": {
            "step": state.step, "samples_seen": state.samples_seen,
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rngs, "world_size": state.world_size, "bad_samples": state.bad.to_dict(),
        },
    }


def save_step(state: TrainState, final: bool) -> None:
    """保存 ckpt_step{N}.pt 并轮换（或最终的 last.pt）；只有 0 号进程写文件。"""
    obj = checkpoint_dict(state)
    if state.rank == 0:
        out = Path(state.cfg.out_dir)
        save_checkpoint(obj, out / ("last.pt" if final else f"ckpt_step{state.step}.pt"))
        if not final:
            rotate_checkpoints(out, state.cfg.keep_last)


# ---------------------------------------------------------------- 数据
def batch_stream(dataset, state: TrainState):
    """无限地产出本进程的批 ``(images, captions, labels, bad, seen)``，从 state.samples_seen 接着读。"""
    from .data.robust import Batch, collate

    cfg, local_batch = state.cfg, state.cfg.batch_size // state.world_size
    if isinstance(dataset, IterableDataset):
        # 流式数据（WebDataset）没有下标：续训时跳过已读的批（分片由数据集按 rank 切分）
        loader = DataLoader(dataset, batch_size=local_batch, collate_fn=collate,
                            num_workers=cfg.num_workers, drop_last=True)
        skip = state.samples_seen // cfg.batch_size
        while True:
            for batch in loader:
                if skip > 0:
                    skip -= 1
                    continue
                yield batch
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, state.rank, state.world_size,
                                 seed=cfg.seed, start_sample=state.samples_seen)
    if hasattr(dataset, "get_batch") and cfg.num_workers == 0:
        for idx in sampler:  # ShapesDataset 的批量快速路径
            images, captions, labels = dataset.get_batch(idx)
            yield Batch(images, captions, labels, {}, len(idx))
    yield from DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers)


__all__ = ["TrainState", "build_state", "check_config", "resolve_device", "batch_stream",
           "checkpoint_dict", "restore_train_state", "save_step", "seed_everything", "rank_seed"]

"""检查点：内容、原子写入、安全读取、轮换、找最新与续训（第 5 章 sec-code-checkpoint）。

训练检查点是一个只含张量与纯 Python 数据的字典::

    {"format": "clipedu-checkpoint", "version": 1,
     "model": state_dict, "tokenizer": {...}, "config": CLIPConfig.to_dict(),
     "train_config": {...},
     "train_state": {"step", "samples_seen", "optimizer", "scheduler", "scaler",
                     "rng", "world_size", "bad_samples"}}

因为里面没有任意 Python 对象，所以总能用 ``torch.load(..., weights_only=True)`` 读回；
带 pickle 代码的文件会在读取时被拒绝，代码不会执行。
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import random
import re
import sys
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .distributed import all_gather_objects
from .errors import CorruptFileError, describe_unsafe_pickle, unsafe_global
from .seeding import rank_seed, seed_everything

FORMAT = "clipedu-checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"^ckpt_step(\d+)\.pt$")


# ---------------------------------------------------------------- 内容
def training_checkpoint(state) -> dict:
    """训练状态 ``state``（``trainer.TrainState``）→ 检查点字典。

    所有进程都要调用：要收集各进程的随机数状态（续训后每个进程的数据增强接着原样走）。
    """
    scaler = state.precision.scaler
    ema = state.ema
    return {
        "format": FORMAT, "version": VERSION,
        # 用 EMA 时 "model" 是平均后的参数 θ̄（评估、导出、load_model 都用它），
        # 续训需要的原始参数 θ 放在 train_state["raw_model"]
        "model": ema.state_dict() if ema is not None else state.raw_model.state_dict(),
        "tokenizer": state.tokenizer.state_dict(),
        "config": state.model_config.to_dict(),
        "train_config": dataclasses.asdict(state.cfg),
        "train_state": {
            "step": state.step, "samples_seen": state.samples_seen,
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": all_gather_objects(rng_state()), "world_size": state.world_size,
            "bad_samples": state.bad.to_dict(),
            **({"raw_model": state.raw_model.state_dict(), "ema_updates": ema.updates}
               if ema is not None else {}),
        },
    }


def save_training_checkpoint(state, final: bool) -> Optional[Path]:
    """保存 ``ckpt_step{N}.pt`` 并轮换，或最终的 ``last.pt``；只有 0 号进程写文件并返回路径。"""
    obj = training_checkpoint(state)
    if state.rank != 0:
        return None
    out = Path(state.cfg.out_dir)
    path = save_checkpoint(obj, out / ("last.pt" if final else f"ckpt_step{state.step}.pt"))
    if not final:
        rotate_checkpoints(out, state.cfg.keep_last)
    return path


def restore_training_state(state, ckpt: dict) -> None:
    """恢复模型、优化器、日程、GradScaler、步数、数据位置、坏样本计数与随机数状态。"""
    ts = ckpt["train_state"]
    raw = ts.get("raw_model")  # 有它说明那次训练用了 EMA，"model" 是平均后的参数
    load_state_dict_checked(state.raw_model, raw if raw is not None else ckpt["model"])
    if state.ema is not None:
        if raw is not None:
            state.ema.load_state_dict(ckpt["model"], ts.get("ema_updates", 0))
        else:  # 那次训练没用 EMA：从续训时的参数开始平均
            state.ema.load_state_dict(state.raw_model.state_dict(), 0)
    elif raw is not None:
        print("[clipedu] 检查点带有 EMA 参数，但这次续训没有设置 --ema-decay："
              "从原始参数接着训练，不再平均 / resuming without ema")
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
    else:  # 进程数变了：旧的随机数状态对不上，改用由种子与步数派生的新状态
        seed_everything(rank_seed(state.cfg.seed + state.step, state.rank))


def load_resume_checkpoint(resume: Optional[str], out_dir) -> Optional[dict]:
    """``--resume latest`` 取 out_dir 里最新的检查点（没有就返回 None，从头训练）；
    ``--resume PATH`` 必须存在且是可续训的 clipedu 检查点。"""
    if not resume:
        return None
    if resume == "latest":
        path = find_latest(out_dir)
        if path is None:
            print(f"[clipedu] --resume latest：{out_dir} 里还没有检查点，从头开始训练")
            return None
    else:
        path = Path(resume)
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != FORMAT or "train_state" not in ckpt:
        raise ValueError(f"{path} 不是可续训的 clipedu 检查点（缺少 train_state）；"
                         f"微调请用 --init-from / not a resumable checkpoint")
    return ckpt


# ---------------------------------------------------------------- 写入
def _fsync_dir(directory: Path) -> None:
    """rename 之后目录项也要落盘，否则断电后可能“文件回到旧版本”。
    Windows 上没有目录 fsync。"""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """原子地保存：先写同目录的临时文件并 fsync，再 os.replace 覆盖目标。

    任何一步失败（例如磁盘满 OSError）都只留下旧文件，临时文件被删掉。
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # 同一文件系统上的 rename 是原子的
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _step_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """``ckpt_step{N}.pt`` 按 N 从小到大排好。"""
    found = ((m, p) for p in Path(out_dir).glob("ckpt_step*.pt")
             if (m := _STEP_RE.match(p.name)))
    return sorted((int(m.group(1)), p) for m, p in found)


def rotate_checkpoints(out_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """只保留最近 keep_last 个 ``ckpt_step{N}.pt``（last.pt 不动），返回删掉的文件。"""
    if keep_last <= 0:
        return []
    removed = [p for _, p in _step_checkpoints(out_dir)[:-keep_last]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def find_latest(out_dir: str | os.PathLike) -> Optional[Path]:
    """``--resume latest``：只看文件名与文件尾，不读张量。

    ``ckpt_step{N}.pt`` 里 N 最大的那个；``last.pt`` 只在一次运行结束时写，比它早写的
    按步检查点都不比它新，所以它不早于那个文件时取 ``last.pt``。
    ``torch.save`` 写的是 zip，结尾有中央目录：被截断或写坏的文件没有它，跳过。
    """
    out_dir = Path(out_dir)
    steps = []
    for _, p in _step_checkpoints(out_dir):
        if p.is_file() and zipfile.is_zipfile(p):  # FIFO、目录：打开它会卡住，跳过
            steps.append(p)
        else:
            _announce_skip(p)
    best = steps[-1] if steps else None
    last = out_dir / "last.pt"
    if last.is_file() and not zipfile.is_zipfile(last):
        _announce_skip(last)
    elif last.is_file():
        if best is None or last.stat().st_mtime_ns >= best.stat().st_mtime_ns:
            best = last
    return best


def _announce_skip(path: Path) -> None:
    """退回更早的检查点时要说出来：用户得知道最新的那个坏了。"""
    print(f"[clipedu] 跳过无法读取的检查点 {path}（被截断、写坏或不是普通文件），改用更早的检查点"
          " / skipping unreadable checkpoint", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- 读取
def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """安全读取检查点（``weights_only=True``）。

    缺失、截断、损坏或含 pickle 代码的文件都给出清楚的中文错误，代码不会执行。
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"找不到检查点文件：{path}；请检查路径，或用 "
                                f"--resume latest / checkpoint not found")
    check_zip_crc(path)  # torch.load 不核对校验和：中间坏了几个字节的文件照样“读出来”
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # 乱码、截断的文件也会抛 UnpicklingError（invalid load key）：与恶意载荷分开说
        if unsafe_global(e) is None:
            raise CorruptFileError(f"检查点 {path} 已损坏或不是 PyTorch 文件；"
                                   "请改用上一个检查点（ckpt_step*.pt）"
                                   " / corrupt checkpoint") from None
        # weights_only 模式拒绝任何非白名单的全局对象：这正是恶意 __reduce__ 载荷的样子
        raise ValueError(f"拒绝加载检查点 {path}：{describe_unsafe_pickle(e)}"
                         " / refused unsafe checkpoint") from None
    # 截断/乱码文件会从 zip、pickle 各层抛出各种异常
    except Exception as e:  # noqa: BLE001
        raise CorruptFileError(
            f"检查点 {path} 已损坏或被截断（{type(e).__name__}: {str(e)[:80]}）；"
            f"请改用上一个检查点（ckpt_step*.pt） / corrupt or truncated checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} 不是 clipedu 检查点：顶层应为 dict，"
                         f"实际为 {type(obj).__name__}")
    return obj


def check_zip_crc(path: Path) -> None:
    """``torch.save`` 写的是 zip，每个成员都带 CRC-32；逐个核对，不符就报错而不是载入错的权重。

    不是 zip（旧格式）或 zip 结构本身坏了（截断）时什么也不做，交给 torch.load 报告。
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception:  # noqa: BLE001  不是 zip、截断、不支持的压缩方式：由 torch.load 说明
        return
    if bad is not None:
        raise CorruptFileError(f"检查点 {path} 已损坏：成员 {bad} 的 CRC-32 校验和不符（文件内容被改动"
                               "或磁盘出错）；请改用上一个检查点（ckpt_step*.pt） / corrupt checkpoint (bad CRC)")


def _require_clipedu(ckpt: dict, path) -> None:
    needed = ("model", "config", "tokenizer")
    if ckpt.get("format") != FORMAT or any(k not in ckpt for k in needed):
        raise ValueError(
            f"{path} 不是 clipedu 训练检查点（缺少 format/model/config/tokenizer 字段，"
            f"实际字段为 {sorted(ckpt)[:8]}）；OpenAI/open_clip 权重请用 "
            f"clipedu.load_pretrained"
        )


def _listed(items: list[str], sep: str = ", ") -> str:
    return sep.join(items[:10]) + (" …" if len(items) > 10 else "")


def build_model_checked(config, state: dict, strict: bool = True):
    """按 config 建 CLIP 并载入 state。先在 meta 设备上建一个不占内存的骨架核对键与形状：
    文件里的配置被改坏（例如宽度 10^12）时报出差异，而不是先去分配几 TB 内存。"""
    from .model import CLIP

    with torch.device("meta"):
        skeleton = CLIP(config)
    check_state_dict(skeleton, state, strict)
    model = CLIP(config)
    load_state_dict_checked(model, state, strict)
    return model


def load_state_dict_checked(model: torch.nn.Module, state: dict,
                            strict: bool = True) -> None:
    """把 state 载入模型；键或形状不一致时列出具体的键与形状（而不是一长串报错）。"""
    check_state_dict(model, state, strict)
    model.load_state_dict(state, strict=strict)


def check_state_dict(model: torch.nn.Module, state: dict, strict: bool = True) -> None:
    """state 与模型的键、形状是否一致；不一致时抛 ValueError 列出差异。"""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("检查点里的模型权重应为 {名字: 张量} 的字典，实际不是；文件不是 clipedu 写的"
                         "或已被改坏 / invalid state dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_bad = [
        f"{k}: 检查点 {tuple(state[k].shape)} vs 模型 {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if shape_bad:
        problems.append("形状不一致：" + _listed(shape_bad, "; "))
    if strict and missing:
        problems.append("模型有而检查点缺少的键：" + _listed(missing))
    if strict and unexpected:
        problems.append("检查点多出的键：" + _listed(unexpected))
    if problems:
        raise ValueError(
            "检查点与模型配置不匹配（是否用另一个预设/配置训练的？）——"
            + "；".join(problems) + " / checkpoint does not match config"
        )


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", raw_weights: bool = False):
    """从 clipedu 检查点重建 ``(CLIP, 分词器)``，模型处于 eval 模式。

    分词器是训练时保存的那个（ChineseTokenizer 或 BertChineseTokenizer）。用 EMA 训练的检查点默认给出
    平均后的参数；``raw_weights=True`` 时给出未平均的参数（``train_state.raw_model``）。"""
    from .bert_tokenizer import tokenizer_from_state_dict
    from .config import config_from_file

    ckpt = load_checkpoint(path)
    _require_clipedu(ckpt, path)
    state = ckpt["model"]
    if raw_weights:
        state = (ckpt.get("train_state") or {}).get("raw_model")
        if state is None:
            raise ValueError(f"{path} 不是用 EMA（--ema-decay）训练的可续训检查点，没有未平均的参数 / no raw weights")
    model = build_model_checked(config_from_file(ckpt["config"], path), state)
    tokenizer = tokenizer_from_state_dict(ckpt["tokenizer"])
    return model.to(device).eval(), tokenizer


def is_clipedu_checkpoint(ckpt: dict) -> bool:
    """字典是不是 clipedu 写的检查点（而不是 OpenAI/open_clip 的 state dict）。"""
    return ckpt.get("format") == FORMAT


# ---------------------------------------------------------------- 随机数状态
def rng_state() -> dict:
    """python、numpy、torch、cuda 的随机数状态，全部转成 weights_only 可读的类型。"""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """恢复 rng_state() 的结果。"""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys, dtype=np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""检查点：原子写入、安全读取（weights_only）、轮换与完整恢复（见第 5 章 sec-code-checkpoint）。

检查点是一个只含张量与纯 Python 数据的字典::

    {"format": "clipedu-checkpoint", "version": 1,
     "model": state_dict, "tokenizer": {...}, "config": CLIPConfig.to_dict(),
     "train_config": {...}, "train_state": {"step", "samples_seen", "optimizer", "scheduler",
                                            "scaler", "rng", "world_size"}}

因为里面没有任意 Python 对象，所以总能用 ``torch.load(..., weights_only=True)`` 读回；
带 pickle 代码的文件会在读取时被拒绝，代码不会执行。
"""
from __future__ import annotations

import os
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

FORMAT = "clipedu-checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"^ckpt_step(\d+)\.pt$")


# ---------------------------------------------------------------- 写入
def _fsync_dir(directory: Path) -> None:
    """rename 之后目录项也要落盘，否则断电后可能“文件回到旧版本”。Windows 上没有目录 fsync。"""
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


def rotate_checkpoints(out_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """只保留最近 keep_last 个 ``ckpt_step{N}.pt``（last.pt 不动），返回被删除的文件。"""
    if keep_last <= 0:
        return []
    found = sorted(
        (int(m.group(1)), p) for p in Path(out_dir).glob("ckpt_step*.pt") if (m := _STEP_RE.match(p.name))
    )
    removed = [p for _, p in found[:-keep_last]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


# ---------------------------------------------------------------- 读取
def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """安全读取检查点（``weights_only=True``）；缺失、截断、损坏或含 pickle 代码都给出清楚的错误。"""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"找不到检查点文件：{path}；请检查路径，或用 --resume latest / checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        from .errors import describe_unsafe_pickle, unsafe_global  # [hardening] 乱码与恶意载荷分开说
        if unsafe_global(e) is None:  # 乱码、截断的文件也会抛 UnpicklingError（invalid load key、operand）
            raise ValueError(f"检查点 {path} 已损坏或不是 PyTorch 文件；请改用上一个检查点（ckpt_step*.pt） "
                             "/ corrupt checkpoint") from None
        # weights_only 模式拒绝任何非白名单的全局对象：这正是恶意 __reduce__ 载荷的样子
        raise ValueError(f"拒绝加载检查点 {path}：{describe_unsafe_pickle(e)} / refused unsafe checkpoint") from None
    except Exception as e:  # noqa: BLE001  截断/乱码文件会从 zip、pickle 各层抛出各种异常
        raise ValueError(
            f"检查点 {path} 已损坏或被截断（{type(e).__name__}: {str(e)[:120]}）；"
            f"请改用上一个检查点（ckpt_step*.pt）/ corrupt or truncated checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} 不是 clipedu 检查点：顶层应为 dict，实际为 {type(obj).__name__}")
    return obj


def _require_clipedu(ckpt: dict, path) -> None:
    if ckpt.get("format") != FORMAT or any(k not in ckpt for k in ("model", "config", "tokenizer")):  # [hardening] +tokenizer
        raise ValueError(
            f"{path} 不是 clipedu 训练检查点（缺少 format/model/config/tokenizer 字段，实际字段为 {sorted(ckpt)[:8]}）；"
            f"OpenAI/open_clip 权重请用 clipedu.load_pretrained"
        )


def load_state_dict_checked(model: torch.nn.Module, state: dict, strict: bool = True) -> None:
    """把 state 载入模型；键或形状不一致时列出具体的键与形状，而不是 PyTorch 的长串报错。"""
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
        problems.append("形状不一致：" + "; ".join(shape_bad[:10]) + (" …" if len(shape_bad) > 10 else ""))
    if strict and missing:
        problems.append("模型有而检查点缺少的键：" + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""))
    if strict and unexpected:
        problems.append("检查点多出的键：" + ", ".join(unexpected[:10]) + (" …" if len(unexpected) > 10 else ""))
    if problems:
        raise ValueError(
            "检查点与模型配置不匹配（是否用另一个预设/配置训练的？）/ checkpoint does not match config:\n  "
            + "\n  ".join(problems)
        )
    model.load_state_dict(state, strict=strict)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """从 clipedu 检查点重建 ``(CLIP, ChineseTokenizer)``，模型处于 eval 模式。"""
    from .config import CLIPConfig
    from .model import CLIP
    from .tokenizer import ChineseTokenizer

    ckpt = load_checkpoint(path)
    _require_clipedu(ckpt, path)
    model = CLIP(CLIPConfig.from_dict(ckpt["config"]))
    load_state_dict_checked(model, ckpt["model"])
    tokenizer = ChineseTokenizer.from_state_dict(ckpt["tokenizer"])
    return model.to(device).eval(), tokenizer


def find_latest(out_dir: str | os.PathLike) -> Optional[Path]:
    """``--resume latest``：取步数最大的检查点（last.pt 与 ckpt_step*.pt 中 step 最大者）。"""
    out_dir = Path(out_dir)
    candidates = [p for p in out_dir.glob("ckpt_step*.pt") if _STEP_RE.match(p.name)]
    if (out_dir / "last.pt").is_file():
        candidates.append(out_dir / "last.pt")
    best, best_step = None, -1
    for p in candidates:
        try:
            step = int(load_checkpoint(p).get("train_state", {}).get("step", -1))
        except ValueError as e:  # [hardening] 损坏的文件跳过，退回更早的检查点，并说出来
            print(f"[clipedu] 跳过无法读取的检查点 {p}（{str(e)[:160]}），改用更早的检查点 "
                  "/ skipping unreadable checkpoint", file=sys.stderr, flush=True)
            continue
        if step > best_step:
            best, best_step = p, step
    return best


# ---------------------------------------------------------------- 随机数状态
def rng_state() -> dict:
    """python、numpy、torch、cuda 的随机数状态，全部转成 weights_only 可读的类型。"""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
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
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

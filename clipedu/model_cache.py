"""按配置与种子寻址的模型缓存：同一个训练在一次构建里只做一次（见第 5 章 sec-time-budget）。

第 2、3 章的好几个笔记本都要一个“在几何图形世界上训练好的 tiny-cpu CLIP”。同样的配置、同样的
种子，训练结果就是同一个模型，没有必要每个笔记本重训一遍。``train_cached(cfg)`` 先用配置算出
一个键（SHA-256），缓存里有就直接把权重与日志还原到 ``cfg.out_dir``，没有才调用 ``train(cfg)``
并把结果存起来。之后的代码照常读 ``out_dir/last.pt``、``log.jsonl``、``metrics.json``。

缓存目录：环境变量 ``CLIPEDU_CACHE``，默认 ``~/.cache/clipedu/models``（家目录不可写时见 ``clipedu.user_cache``）。只存安全格式：
权重 ``model.safetensors``，其余 JSON；写入先进临时目录，再整体改名，中途被杀不会留下半个条目。
只有按步数正常结束的运行才入缓存：被时间预算截断的结果取决于机器当时有多忙，不可复现。

键里还有 clipedu 源码的摘要：``git pull`` 之后训练代码变了，旧代码训练出的模型就不会再被还原。
缓存最多留 ``MAX_ENTRIES`` 个条目，按最近一次使用排序，多出的最旧条目在存新条目时删掉。
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .fileinfo import file_sha256
from .outdir import OutDirLock, check_out_dir_unused, clear_run_files
from .trainer import train
from .user_cache import user_cache_dir

CACHE_ENV = "CLIPEDU_CACHE"
CACHE_FORMAT = 2  # 2：meta.json 记下每个文件的 SHA-256，还原前核对
MAX_ENTRIES = 8  # 一遍书用到 2 个模型；其余是旧代码或别的配置留下的
# 不影响训练结果的字段：不进键
_NOT_IN_KEY = ("out_dir", "overwrite", "progress", "tensorboard", "log_every", "save_every", "keep_last")


def cache_dir() -> Path:
    """缓存根目录：``$CLIPEDU_CACHE``，否则 ``~/.cache/clipedu/models``（家目录不可写时见 ``user_cache``）。"""
    return user_cache_dir("models", CACHE_ENV)


def cache_key(cfg: TrainConfig, data_key: Optional[str] = None) -> str:
    """由训练配置（去掉输出目录、进度条等无关字段）、clipedu 与 torch 版本算出的 SHA-256 前 24 位。"""
    from . import __version__

    d = dataclasses.asdict(cfg)
    for name in _NOT_IN_KEY:
        d.pop(name, None)
    d["model"] = cfg.model_config().to_dict()  # 预设展开成具体结构：预设改了，键也跟着变
    payload = {"cache_format": CACHE_FORMAT, "clipedu": __version__, "code": code_digest(),
               "torch": torch.__version__.split("+")[0], "train_config": d, "data_key": data_key}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """clipedu 包里全部源文件（相对路径与内容）的 SHA-256：代码一变，缓存键就变。"""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix not in (".pyc", ".pyo")):
        h.update(path.relative_to(package).as_posix().encode("utf-8") + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def train_cached(cfg: TrainConfig, train_dataset=None, data_key: Optional[str] = None) -> list[dict]:
    """与 ``train(cfg)`` 相同的返回值与输出文件；同样的配置第二次调用时直接从缓存还原。

    传入自己的 ``train_dataset`` 时必须给出 ``data_key``（一个能唯一描述这份数据的字符串），
    否则无法判断两次的数据是否相同。
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train_cached 需要 TrainConfig，实际为 {type(cfg).__name__}")
    if train_dataset is not None and not data_key:
        raise ValueError("传入了自己的 train_dataset，请同时给出 data_key（描述这份数据的字符串），"
                         "缓存才能区分不同的数据 / custom dataset needs data_key")
    if cfg.resume or cfg.init_from:
        raise ValueError("续训（resume）与 init_from 依赖外部文件，不能按配置缓存；请直接用 clipedu.train / "
                         "cannot cache resumed or initialised runs")
    entry = cache_dir() / cache_key(cfg, data_key)
    # 同一个键同时只有一个进程在训练：并行执行的两个笔记本要同一个模型时，后到的等前一个训完，再从缓存还原
    with _entry_lock(entry):
        if (entry / "meta.json").is_file():
            contents, problem = _read_entry(entry)  # 每个文件只读一次：核对与还原用同一份字节
            if problem is None:
                with OutDirLock(cfg.out_dir):  # 还原与训练守同样的规则：不覆盖已有的训练
                    check_out_dir_unused(cfg.out_dir, None, cfg.overwrite)
                    if cfg.overwrite:
                        clear_run_files(cfg.out_dir)
                    history = _restore(contents, Path(cfg.out_dir))
                print(f"[clipedu] 从模型缓存还原（{len(history)} 步，键 {entry.name}）：{entry}")
                _touch(entry)
                return history
            # 缓存只是省时间的副本：坏了就删掉重训，不让一个坏文件挡住笔记本
            print(f"[clipedu] 模型缓存条目 {entry} 已损坏（{problem}），删掉后重新训练 / corrupt cache entry")
            shutil.rmtree(entry, ignore_errors=True)
        history = train(cfg, train_dataset)
        metrics = json.loads((Path(cfg.out_dir) / "metrics.json").read_text(encoding="utf-8"))
        if metrics.get("stopped_by") == "steps":
            _store(entry, Path(cfg.out_dir), history)
    prune()
    return history


def _touch(entry: Path) -> None:
    try:
        os.utime(entry)  # 条目目录的修改时间 = 最近一次使用
    except OSError:
        pass


def prune(max_entries: int = MAX_ENTRIES) -> list[str]:
    """只留最近用过的 ``max_entries`` 个条目；别的进程正持锁（训练或还原中）的不动。返回删掉的键。

    只删本模块写的东西：带 ``meta.json`` 的条目，以及写到一半被杀、超过一小时的临时目录 ``.<键>.*``。"""
    root = cache_dir()
    if not root.is_dir():
        return []
    entries, removed = [], []
    for p in root.iterdir():
        if not p.is_dir() or p.is_symlink():
            continue
        try:
            if (p / "meta.json").is_file():
                entries.append((p.stat().st_mtime, p))
            elif p.name.startswith(".") and time.time() - p.stat().st_mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue
    entries.sort(reverse=True)
    for _, p in entries[max_entries:]:  # 刚存好的条目最新，总在留下的那几个里
        with _entry_lock(p, wait=False) as got:
            if got:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


@contextlib.contextmanager
def _entry_lock(entry: Path, wait: bool = True):
    """缓存条目旁的锁文件（``<键>.lock``，fcntl.flock）：持锁进程退出或被杀时内核自动释放，不会留下死锁。

    ``wait=False`` 时不等：别人持着锁就让出 False（清理缓存时跳过正在用的条目）。"""
    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows：没有 flock，不加锁（最坏情况是同一个模型训练两次，或还原时条目被删而重训）
        yield True
        return
    with open(entry.parent / f"{entry.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _store(entry: Path, out_dir: Path, history: list[dict]) -> None:
    """把 last.pt 的权重存成 safetensors，其余存成 JSON；先写临时目录再原子改名。"""
    from safetensors.torch import save_file

    ckpt = load_checkpoint(out_dir / "last.pt")
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        save_file({k: v.detach().contiguous() for k, v in ckpt["model"].items()}, str(tmp / "model.safetensors"))
        (tmp / "history.json").write_text(json.dumps(history, ensure_ascii=False), encoding="utf-8")
        shutil.copyfile(out_dir / "metrics.json", tmp / "metrics.json")
        meta = {"format": "clipedu-model-cache", "cache_format": CACHE_FORMAT, "key": entry.name,
                "config": ckpt["config"], "tokenizer": ckpt["tokenizer"], "train_config": ckpt["train_config"],
                "sha256": {name: file_sha256(tmp / name) for name in _FILES}}
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")  # 最后写：有它才算完整
        os.replace(tmp, entry)
    except OSError:
        if not (entry / "meta.json").is_file():
            raise  # 不是“别的进程已经先存好了同一个条目”，而是真的写失败了
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_FILES = ("model.safetensors", "history.json", "metrics.json")


def _read_entry(entry: Path) -> tuple[Optional[tuple[dict, dict]], Optional[str]]:
    """读条目的每个文件（各读一次）并核对 meta.json 记下的 SHA-256。

    返回 ``((meta, {文件名: 字节}), None)``；条目不完整或哪个文件对不上时返回 ``(None, 哪里不对)``。
    safetensors 本身没有校验和：中间翻转一个字节的文件照样能读，读出的是错的权重。"""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != "clipedu-model-cache" or meta.get("key") != entry.name:
            return None, "meta.json 与条目不符"
        blobs = {name: (entry / name).read_bytes() for name in _FILES}
        for name, data in blobs.items():
            if hashlib.sha256(data).hexdigest() != meta["sha256"][name]:
                return None, f"{name} 的 SHA-256 不符"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{type(e).__name__}: {e}"
    return (meta, blobs), None


def _restore(contents: tuple[dict, dict], out_dir: Path) -> list[dict]:
    """把 ``_read_entry`` 读到的条目写成 out_dir/last.pt（只含模型，不能续训）、log.jsonl 与 metrics.json。"""
    from safetensors.torch import load

    meta, blobs = contents
    history = json.loads(blobs["history.json"].decode("utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"format": FORMAT, "version": VERSION, "model": load(blobs["model.safetensors"]),
                     "tokenizer": meta["tokenizer"], "config": meta["config"],
                     "train_config": meta["train_config"]}, out_dir / "last.pt")
    with open(out_dir / "log.jsonl", "w", encoding="utf-8") as f:
        for record in history:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_bytes(blobs["metrics.json"])
    return history


__all__ = ["train_cached", "cache_key", "cache_dir", "code_digest", "prune", "CACHE_ENV", "MAX_ENTRIES"]

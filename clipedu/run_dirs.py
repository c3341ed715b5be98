"""笔记本的输出目录：每个笔记本名下只留最近一次运行，磁盘不会越用越满（见前言 sec-preface-outputs）。

笔记本要把训练、索引、导出的文件写到某个目录里。用 ``tempfile.mkdtemp()`` 的话，每运行一次就在
临时目录里多留一份（05_results 一次约 200 MB），没有人去删。``run_dir("05_results")`` 改为：

- 目录在 ``$CLIPEDU_RUNS/05_results/<时间>-<pid>/``，默认根目录是 ``~/.cache/clipedu/runs``；
- 新建之前，删掉同名下**已经结束的进程**留下的运行目录，以及本进程先前建的（同一个单元再运行一次）；
  别的仍在运行的进程（另一个打开着的内核、并行的构建）的目录不动；
- 只删带本模块标记文件 ``.clipedu-run.json`` 的目录，别的东西一概不碰。

所以一个笔记本反复运行，占用的空间不会增长；读者运行完仍可以去目录里看文件，直到下一次运行。
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from .errors import UsageError
from .outdir import RUN_DIR_MARKER as MARKER, _alive, ensure_dir, owner_record, read_owner
from .user_cache import user_cache_dir

RUNS_ENV = "CLIPEDU_RUNS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def runs_root() -> Path:
    """运行目录的根：``$CLIPEDU_RUNS``，否则 ``~/.cache/clipedu/runs``（家目录不可写时见 ``user_cache``）。"""
    return user_cache_dir("runs", RUNS_ENV)


def _finished(path: Path, info: dict | None) -> bool:
    """这个运行目录的主人是否已经结束（本进程自己建的也算：同一个单元再运行一次，替换掉上一次）。"""
    if info is None:  # 标记文件写了一半（主人在写的瞬间被杀）：过一分钟才当作遗留
        try:
            return time.time() - path.stat().st_mtime > 60
        except OSError:
            return False
    if info.get("host") != socket.gethostname():
        return False  # 共享的家目录：别的机器上的进程，判断不了，不动
    if info["pid"] == os.getpid():  # 本进程（或 pid 恰好被复用、早已结束的那个进程）
        return True
    return not _alive(info["pid"], info.get("start"))


def previous_runs(name: str) -> list[Path]:
    """同名下现有的运行目录（带标记文件的），按名字（即时间）排序。"""
    return _runs_in(runs_root() / _check_name(name))


def _runs_in(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink() and (p / MARKER).exists())


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"run_dir 的名字 {name!r} 不合适：请用 1–64 个 ASCII 字母、数字、'_'、'-'、'.'，"
                         "以字母或数字开头，例如 run_dir(\"05_results\") / bad run name")
    return name


def run_dir(name: str) -> Path:
    """为笔记本 ``name`` 新建一个空的运行目录并返回它；同名下已结束的旧运行一并删掉。"""
    base = runs_root() / _check_name(name)
    ensure_dir(base, flag=f"{RUNS_ENV}（运行目录）")
    for old in _runs_in(base):
        if _finished(old, read_owner(old / MARKER)):
            shutil.rmtree(old, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(100):
        path = base / (f"{stamp}-{os.getpid()}" + (f"-{i}" if i else ""))
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 同一秒里同一进程建了 100 个
        raise UsageError(f"无法在 {base} 下新建运行目录 / cannot create run directory")
    tmp = path / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(owner_record(), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path / MARKER)
    return path


__all__ = ["MARKER", "RUNS_ENV", "previous_runs", "run_dir", "runs_root"]

"""输出目录的守护：一个目录同一时刻只属于一个进程，旧的训练不会被悄悄覆盖（见第 5 章 sec-code-checkpoint）。

两条规则：
- **锁**：写输出目录的命令（train、data shard、index、export）运行期间，目录里有 ``.clipedu.lock``
  （JSON：pid、主机、进程启动时刻、开始时间）。另一个进程再来会得到清楚的错误；持锁进程已经不在了
  （被 kill -9、断电）的锁是陈旧锁，会被宣布并接管。torchrun 的各个 rank 属于同一次训练，只有 0 号进程持锁。
- **不覆盖**：``train(cfg)``（命令行与 API 一样）在一个已有内容的目录里开始新训练时拒绝，除非给出
  ``resume``（接着训练）或 ``overwrite``（丢弃旧的训练文件，从头开始）。

目录旗标的检查也在这里：``ensure_dir``（--out：是文件、在文件之下、不可写、符号链接环）与
``require_dir``、``require_regular_file``（--images、--root、--data-path 这类输入路径）。
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Optional

from .errors import RunError, UsageError

LOCK_NAME = ".clipedu.lock"
# clipedu.run_dir 建的运行目录里的标记文件（谁建的）：不算训练留下的内容
RUN_DIR_MARKER = ".clipedu-run.json"
# 一次训练写出的文件；--overwrite 只删除它们
RUN_FILES = ("last.pt", "log.jsonl", "metrics.json", "ckpt_step*.pt", ".*.tmp*", "tensorboard")


def current_rank() -> int:
    """本进程在训练任务里的序号：进程组已建好就问它，否则看 torchrun 设的 RANK。"""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover
        pass
    rank = os.environ.get("RANK", "0")
    return int(rank) if rank.isdigit() else 0


def _proc_start(pid: int) -> Optional[str]:
    """Linux 上进程的启动时刻（/proc/PID/stat 第 22 列），用来识别 pid 被新进程复用的情况。"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    """pid 那个进程是否还在（``start`` 用来识别 pid 被复用）。判断不了时当作还在：宁可不接管、不删除。"""
    if os.name == "nt":  # Windows 上 os.kill(pid, 0) 会结束那个进程，不能拿来探测
        try:
            import psutil
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    now = _proc_start(pid)
    return start is None or now is None or now == start


def owner_record() -> dict:
    """谁在用：锁文件与运行目录标记（clipedu.run_dir）里记下的本进程信息。"""
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": " ".join(sys.argv)[:300]}


def read_owner(path: Path) -> Optional[dict]:
    """读 ``owner_record`` 写下的 JSON；读不出、不是本库写的格式时返回 None。"""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def ensure_dir(out_dir: str | os.PathLike, flag: str = "--out") -> Path:
    """建好输出目录；它是文件、在文件之下或不可写时抛 UsageError，指明旗标与路径。"""
    path = Path(out_dir)
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # 下面建目录时说清楚
    except OSError as e:  # 符号链接环（ELOOP）、路径太长……
        raise UsageError(f"{flag} {path}：无法访问（{e.strerror}）；请换一个输出目录 / bad output path") from None
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} 是一个文件，不是目录；请换一个输出目录 / output path is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{flag} {path}：路径中有一段是文件，无法在其下建目录；请换一个输出目录 "
                         "/ output path is under a file") from None
    except PermissionError:
        raise UsageError(f"{flag} {path}：没有权限创建这个目录；请换一个可写的位置 / permission denied") from None
    except OSError as e:
        raise UsageError(f"{flag} {path}：无法创建目录（{e.strerror}） / cannot create output directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path} 不可写；请换一个可写的输出目录 / output directory is not writable")
    return path


def require_dir(path: str | os.PathLike, what: str, flag: str) -> str:
    """用户给出的目录：不存在、不是目录（文件、FIFO）、符号链接环时各给一行说明，指明旗标。"""
    path = os.path.expanduser(str(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path}：{what}不存在；请检查路径 / directory not found") from None
    except OSError as e:  # 符号链接环（ELOOP）、没有权限……
        raise UsageError(f"{flag} {path}：无法访问（{e.strerror}） / bad directory") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{flag} {path} 不是目录（是文件、FIFO 或设备）；请给出{what}的路径 / not a directory")
    return path


def require_regular_file(path: str | os.PathLike, what: str, flag: str) -> str:
    """用户给出的文件路径：不存在或不是普通文件时抛清楚的错误，指明旗标。"""
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"找不到{what} {path}；请检查 {flag} / file not found")
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path} 不是普通文件（是目录、FIFO 或设备）；请给出{what}的路径 / not a regular file")
    return path


class OutDirLock:
    """输出目录的锁（可重入：同一进程里嵌套获取只记次数）。用法：``with OutDirLock(out): ...``。"""

    _held: dict[str, int] = {}  # 本进程持有的锁：路径 -> 嵌套层数

    def __init__(self, out_dir: str | os.PathLike, enabled: Optional[bool] = None, flag: str = "--out"):
        self.out_dir, self.flag = Path(out_dir), flag
        self.path = self.out_dir / LOCK_NAME
        self.enabled = current_rank() == 0 if enabled is None else enabled
        self._key = ""  # 规范化的锁文件路径：建好目录之后才能 resolve（路径可能是坏的符号链接）

    def _read(self) -> Optional[dict]:
        return read_owner(self.path)

    def _try_create(self) -> bool:
        """原子地创建带完整内容的锁文件：先写临时文件，再 link 过去（目标已存在则失败）。"""
        tmp = self.out_dir / f".clipedu.lock.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(owner_record(), ensure_ascii=False), encoding="utf-8")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> "OutDirLock":
        if not self.enabled:
            return self
        self._created = not self.out_dir.exists()  # 失败的运行不留下空目录
        ensure_dir(self.out_dir, self.flag)
        self._key = str(self.path.resolve())
        if self._key in self._held:
            self._held[self._key] += 1
            self._created = False
            return self
        for _ in range(3):
            if self._try_create():
                self._held[self._key] = 1
                return self
            info = self._read()
            if info is None:
                # 读不出的锁文件：不是本库写的或被截断；旧于 1 分钟才当作陈旧锁
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 60:
                    raise RunError(f"输出目录 {self.out_dir} 里有无法解析的锁文件 {self.path}；"
                                   "若确认没有训练在用这个目录，删掉它再试 / output directory is locked")
                print(f"[clipedu] 接管 {self.path}：锁文件无法解析且已有 {age:.0f} 秒 / taking over stale lock",
                      file=sys.stderr)
            elif info.get("host") != socket.gethostname():
                raise RunError(
                    f"输出目录 {self.out_dir} 正被主机 {info.get('host')} 上的 clipedu 进程（pid {info['pid']}，"
                    f"始于 {info.get('since')}）使用；请换一个 {self.flag}。若确认那个进程已经结束，删掉 {self.path} "
                    "再试 / output directory is locked by another host")
            elif info["pid"] == os.getpid() or _alive(info["pid"], info.get("start")):
                raise RunError(
                    f"输出目录 {self.out_dir} 正被另一个 clipedu 进程使用（pid {info['pid']}，始于 {info.get('since')}："
                    f"{info.get('argv', '')}）；请等它结束或换一个 {self.flag} / output directory is locked")
            else:
                print(f"[clipedu] {self.path} 的持有者（pid {info['pid']}，始于 {info.get('since')}）已不在运行，"
                      "接管这个陈旧的锁 / taking over stale lock", file=sys.stderr)
            self.path.unlink(missing_ok=True)
        raise RunError(f"无法获得输出目录 {self.out_dir} 的锁（{self.path} 反复被别的进程抢走） / output directory is locked")

    def release(self) -> None:
        if not self.enabled or self._key not in self._held:
            return
        self._held[self._key] -= 1
        if self._held[self._key] > 0:
            return
        del self._held[self._key]
        info = self._read()
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        if getattr(self, "_created", False):
            try:
                self.out_dir.rmdir()  # 只删空目录：训练写了文件就保留
            except OSError:
                pass

    def __enter__(self) -> "OutDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_files(out_dir: str | os.PathLike) -> list[Path]:
    """目录里除锁文件之外的全部条目。"""
    path = Path(out_dir)
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir()
                  if p.name not in (LOCK_NAME, RUN_DIR_MARKER) and not p.name.startswith(".clipedu.lock."))


def check_out_dir_unused(out_dir: str | os.PathLike, resume: Optional[str], overwrite: bool) -> None:
    """“不覆盖” 规则：目录非空时必须说明是接着训练（resume）还是丢弃旧训练（overwrite）。须在持锁后调用。"""
    if resume and overwrite:
        raise UsageError("--resume 与 --overwrite 不能同时使用：一个接着旧训练，一个丢弃旧训练 / conflicting flags")
    existing = run_files(out_dir)
    if not existing or resume or overwrite:
        return
    names = ", ".join(p.name for p in existing[:6]) + (" …" if len(existing) > 6 else "")
    raise UsageError(
        f"输出目录 {out_dir} 不是空的（{names}）；接着那次训练请加 --resume latest（API：resume=\"latest\"），"
        "丢弃它从头训练请加 --overwrite（API：overwrite=True），或换一个 --out / output directory not empty")


def clear_run_files(out_dir: str | os.PathLike) -> list[str]:
    """``overwrite``：删掉上一次训练写的文件（只删 RUN_FILES，别的文件不动），返回删掉的名字。"""
    removed = []
    for pattern in RUN_FILES:
        for p in Path(out_dir).glob(pattern):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        print(f"[clipedu] --overwrite：删除了 {out_dir} 里旧训练的 {', '.join(sorted(removed))}", file=sys.stderr)
    return removed


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_resume_config(cfg, ckpt: dict, path) -> None:
    """续训的检查点必须是同一个模型：另一个预设或形状的检查点被拒绝，并列出差异。

    ``--init-from`` 的运行，模型来自那个文件而不是预设，这里不比较。
    """
    from .config import config_from_file

    if cfg.init_from or not isinstance(ckpt.get("config"), dict):
        return
    want = _flatten(cfg.model_config().to_dict())
    have = _flatten(config_from_file(ckpt["config"], path).to_dict())
    diff = [f"{k}: 检查点 {have.get(k)!r} ≠ 现在 {want.get(k)!r}" for k in sorted(set(want) | set(have))
            if have.get(k) != want.get(k)]
    if diff:
        old_cfg = ckpt.get("train_config") or {}
        old = old_cfg.get("preset")
        if old_cfg.get("init_from"):
            hint = f"那次训练是从 {old_cfg['init_from']} 初始化的，续训请加上原来的 --init-from"
        elif old and old != cfg.preset:
            hint = f"续训请用原来的 --preset {old}"
        else:
            hint = "续训请用与原来相同的模型配置"
        raise UsageError(
            f"--resume：检查点 {path} 的模型配置与现在的不同（{'; '.join(diff[:6])}{' …' if len(diff) > 6 else ''}）；"
            f"{hint}，或换一个 --out 从头训练 / resume config mismatch")


__all__ = ["LOCK_NAME", "check_resume_config", "OutDirLock", "check_out_dir_unused", "clear_run_files", "current_rank",
           "ensure_dir", "require_dir", "require_regular_file", "run_files"]

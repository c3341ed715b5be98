"""clipedu 在用户目录下写东西的位置：模型缓存（``models``）与笔记本的运行目录（``runs``）。

顺序：环境变量（``CLIPEDU_CACHE``、``CLIPEDU_RUNS``）给了就用它；否则 ``$XDG_CACHE_HOME/clipedu/<子目录>``，
没有设 XDG_CACHE_HOME 时是 ``~/.cache/clipedu/<子目录>``。家目录不可写时（只读的家目录、以随意的 uid 运行、
没有家目录的容器），改用系统临时目录下的 ``clipedu-<uid>/<子目录>``，并提示一次：笔记本照样能跑。
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_warned: set[str] = set()


def _default_base() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(os.path.expanduser(xdg)):  # XDG 规范：相对路径无效，忽略
        return Path(xdg).expanduser() / "clipedu"
    return Path.home() / ".cache" / "clipedu"


def _usable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def user_cache_dir(sub: str, env: str) -> Path:
    """``sub``（``models`` 或 ``runs``）所在的目录；``env`` 是可以覆盖它的环境变量名。"""
    given = os.environ.get(env, "").strip()
    if given:
        return Path(given).expanduser()  # 用户自己指定的：照办，写不了时由调用方给出清楚的错误
    try:
        preferred = _default_base() / sub
    except RuntimeError:  # 连家目录都确定不了（没有 HOME，也查不到用户）
        preferred = None
    if preferred is not None and _usable(preferred):
        return preferred
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"clipedu-{uid}" / sub
    if sub not in _warned:
        _warned.add(sub)
        print(f"[clipedu] {preferred or '家目录'} 不可写，改用 {fallback}（可用环境变量 {env} 指定位置）"
              f" / cache directory not writable, using {fallback}", file=sys.stderr)
    return fallback


__all__ = ["user_cache_dir"]

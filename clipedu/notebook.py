"""笔记本的统一开场：随机种子、设备、线程数和 matplotlib 中文字体（见前言 sec-preface-howto）。

每个笔记本的第一个代码单元都是 ``import clipedu; device = clipedu.setup_notebook()``，
字体设置只写在这里一处，而不是复制进每一章。
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

# 按优先级排列：mplfonts 自带的 Noto Sans CJK SC 最先，其余是常见系统字体的家族名。
_SYSTEM_CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
    "PingFang SC", "Microsoft YaHei", "SimHei", "Heiti SC", "AR PL UMing CN",
)
_MPLFONTS_FILE = "NotoSansCJKsc-Regular.otf"


def _mplfonts_path() -> Path | None:
    """mplfonts 包里自带的 Noto Sans CJK SC 字体文件；没有安装该包时返回 None。"""
    try:
        import mplfonts
    except ImportError:
        return None
    path = Path(mplfonts.__file__).parent / "fonts" / _MPLFONTS_FILE
    return path if path.is_file() else None


def register_cjk_font() -> str:
    """向 matplotlib 注册一种中文字体并设为默认无衬线字体，返回字体家族名。

    先用 mplfonts 自带的文件（不联网、各平台一致），找不到再退到系统已装的中文字体；
    两者都没有时抛出 RuntimeError，而不是让图里出现豆腐块。
    """
    import matplotlib
    from matplotlib import font_manager

    family = None
    path = _mplfonts_path()
    if path is not None:
        font_manager.fontManager.addfont(str(path))
        family = font_manager.FontProperties(fname=str(path)).get_name()
    else:
        installed = {f.name for f in font_manager.fontManager.ttflist}
        family = next((name for name in _SYSTEM_CJK_FAMILIES if name in installed), None)
    if family is None:
        raise RuntimeError(
            "找不到中文字体：应安装 mplfonts（pip install mplfonts，自带 Noto Sans CJK SC）"
            "或系统字体 fonts-noto-cjk，实际两者都没有。"
            " / No CJK font found: install 'mplfonts' or 'fonts-noto-cjk'."
        )
    sans = [family] + [f for f in matplotlib.rcParams["font.sans-serif"] if f != family]
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["font.sans-serif"] = sans
    # 中文字体里的 U+2212 负号常缺字形，改用 ASCII 连字符，避免 "Glyph missing" 警告。
    matplotlib.rcParams["axes.unicode_minus"] = False
    return family


def seed_everything(seed: int = 0) -> None:
    """同时设定 Python、NumPy 和 PyTorch（含所有 GPU）的随机种子。"""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed 应为整数，实际为 {type(seed).__name__}：{seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # 也会为所有 CUDA 设备设定种子


def usable_cpus() -> int:
    """本进程能用的 CPU 核数：按 CPU 亲和性（容器、taskset 限制后的真实数目），而不是整机核数。"""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS、Windows 没有 sched_getaffinity
        return os.cpu_count() or 1


def default_threads() -> int:
    """笔记本的 CPU 线程数：``min(2, 可用核数)``，即书中默认“在 2 核上能跑完”。"""
    return min(2, usable_cpus())


def openmp_passive() -> bool:
    """OpenMP 线程空闲时是否让出 CPU（OMP_WAIT_POLICY=PASSIVE 在 torch 载入前生效）。"""
    import clipedu
    return bool(getattr(clipedu, "OMP_PASSIVE", False))


def setup_notebook(seed: int = 0, threads: int | None = None, quiet: bool = False) -> torch.device:
    """笔记本开场：设种子、选设备、设线程数、注册中文字体，返回 ``torch.device``。

    ``threads=None`` 时 CPU 线程数取 ``default_threads()``；传 0 则保持 PyTorch 自己的默认值。
    有 CUDA 时自动使用 GPU。线程的等待策略由 ``import clipedu`` 在 torch 载入之前设好
    （OMP_WAIT_POLICY=PASSIVE）：机器上还有别的忙进程时，忙等的 OpenMP 线程会和它抢核，
    每步慢 2–3 倍。笔记本里若 ``import torch`` 写在 ``import clipedu`` 之前，这里会提示。
    """
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads 应为非负整数或 None，实际为 {threads!r}")
    seed_everything(seed)
    if threads is None:
        threads = default_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    family = register_cjk_font()
    if not quiet:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU × {torch.get_num_threads()} 线程"
        print(f"设备：{device}（{name}）；随机种子：{seed}；中文字体：{family}")
        if device.type == "cpu" and torch.get_num_threads() > 1 and not openmp_passive():
            print("提示：torch 在 clipedu 之前载入，OpenMP 线程会忙等，机器繁忙时训练可能慢数倍；"
                  "请把 import clipedu 放在 import torch 之前，或先设环境变量 OMP_WAIT_POLICY=PASSIVE")
    return device

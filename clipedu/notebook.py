"""笔记本的统一开场：随机种子、设备、线程数和 matplotlib 中文字体（见前言 sec-preface-howto）。

每个笔记本的第一个代码单元都是 ``import clipedu; device = clipedu.setup_notebook()``，
字体设置只写在这里一处，而不是复制进每一章。
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

import clipedu

from .benchmarking import other_busy_cpus, usable_cpus

from .seeding import seed_everything

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


# 全书统一的配色：同一种东西在每一章都是同一种颜色（见 figure_style）。
PALETTE = {
    "image": "#1f77b4",      # 图像（图像塔、图像特征）：蓝
    "text": "#ff7f0e",       # 文本（文本塔、文本特征）：橙
    "seen": "#2ca02c",       # 训练时见过的组合：绿
    "heldout": "#d62728",    # 留出组合：红
    "clipedu": "#1f77b4",    # 本书的 clipedu：蓝
    "open_clip": "#7f7f7f",  # 对照的 open_clip：灰
}


def figure_style() -> None:
    """全书插图的统一样式（setup_notebook 调用；见前言 sec-preface-howto）。

    书页的版心约 740 px 宽：字号按“图缩放到版心宽度后仍清楚”来定；
    图的底色是不透明的白色，深色模式下也不会出现“透明底 + 黑字”；
    默认颜色循环的前几种依次是 PALETTE 里的图像蓝、文本橙、见过绿、留出红；
    标题与标签互相压住时发出“图中文字重叠”警告（clipedu.figure_overlap）。
    """
    import matplotlib
    from cycler import cycler

    order = ["image", "text", "seen", "heldout"]
    extra = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    matplotlib.rcParams.update({
        "figure.dpi": 100,
        "figure.facecolor": "white",
        "figure.edgecolor": "white",
        "axes.facecolor": "white",
        "savefig.facecolor": "white",
        "savefig.transparent": False,
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "legend.fontsize": 10,
        "legend.framealpha": 0.9,
        "figure.titlesize": 13,
        "axes.titlepad": 6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": cycler(color=[PALETTE[k] for k in order] + extra),
        "image.cmap": "viridis",
        # 每张 pyplot 图画完都检查文字是否互相压住（clipedu/figure_overlap.py）
        "figure.hooks": ["clipedu.figure_overlap:watch_overlaps"],
    })


def wrap_title(text: str, width: int = 10) -> str:
    """把子图标题均匀地折成几行，每行至多 ``width`` 个字（中文不按空格断行，textwrap 会把“形”单独留在末行）。

    例：``wrap_title("画面里有没有白色的十字形？")`` → ``"画面里有没有白\n色的十字形？"``（7 + 6 个字）。
    """
    if width < 1:
        raise ValueError(f"width 应为正整数，实际为 {width}")
    n = len(text)
    if n <= width:
        return text
    lines = -(-n // width)                 # 需要几行
    base, extra = divmod(n, lines)         # 前 extra 行各多一个字：各行至多差一个字
    out, start = [], 0
    for k in range(lines):
        end = start + base + (k < extra)
        out.append(text[start:end])
        start = end
    return "\n".join(out)


def default_threads() -> int:
    """笔记本的 CPU 线程数。

    用户设了 ``OMP_NUM_THREADS`` 就照办（例如 CI 里两个笔记本并行、各用 1 个线程）；否则取
    ``min(2, 可用核数)``，即书中默认“在 2 核上能跑完”，但开场时若别的进程已占着核，就只用空着的那些：
    有一个别的忙进程时，2 个线程互相等待、又和它抢核，一步比 1 个线程还慢
    （见 benchmarks/results/threads_under_load.md）。线程数只在开场定一次，之后不变，
    同一台机器、同样的负载下结果可复现。
    """
    return _choose_threads()[0]


def _choose_threads() -> tuple[int, float | None]:
    """(线程数, 因负载让出核时别的进程占着的核数，否则 None)。"""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), None
    usable = usable_cpus()
    n = min(2, usable)
    others = other_busy_cpus() if n > 1 else None
    if others is None:
        return n, None
    # 别的进程占了约半个核以上，就把那个核让出来
    fewer = max(1, min(n, math.floor(usable - others + 0.5)))
    return fewer, (others if fewer < n else None)


def openmp_short_wait() -> bool:
    """OpenMP 等活的线程是否很快让出 CPU（``import clipedu`` 在 torch 载入前设 GOMP_SPINCOUNT）。"""
    return bool(clipedu.OMP_SHORT_WAIT)


def setup_notebook(seed: int = 0, threads: int | None = None, quiet: bool = False) -> torch.device:
    """笔记本开场：设种子、选设备、设线程数、注册中文字体，返回 ``torch.device``。

    ``threads=None`` 时 CPU 线程数取 ``default_threads()``；传 0 则保持 PyTorch 自己的默认值。
    有 CUDA 时自动使用 GPU。线程等活时只自旋很短一会儿，由 ``import clipedu`` 在 torch 载入之前设好
    （GOMP_SPINCOUNT）：否则机器上还有别的忙进程时，自旋的 OpenMP 线程会和它抢核，每步慢 2–3 倍。
    笔记本里若 ``import torch`` 写在 ``import clipedu`` 之前，这里会提示。
    """
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads 应为非负整数或 None，实际为 {threads!r}")
    seed_everything(seed)
    others = None
    if threads is None:
        threads, others = _choose_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    family = register_cjk_font()
    figure_style()
    if not quiet:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU × {torch.get_num_threads()} 线程"
        print(f"设备：{device}（{name}）；随机种子：{seed}；中文字体：{family}")
        if device.type == "cpu" and others is not None:
            print(f"开场时别的进程约占着 {others:.1f} 个核，只用 {threads} 个线程：两个线程和忙进程抢核反而更慢")
        if device.type == "cpu" and torch.get_num_threads() > 1 and not openmp_short_wait():
            print("提示：torch 在 clipedu 之前载入，OpenMP 线程等活时会长时间自旋，机器繁忙时训练可能慢数倍；"
                  f"请把 import clipedu 放在 import torch 之前，或先设环境变量 GOMP_SPINCOUNT={clipedu.SPINCOUNT}")
    return device

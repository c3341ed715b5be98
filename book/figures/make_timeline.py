"""生成第 1 章的发展时间线图 book/figures/generated/timeline.png（见第 1 章 sec-history）。

每个事件都对应 book/references.bib 里的一篇论文；年份取论文首次公开（arXiv 首版）的年份。
用 clipedu.notebook.register_cjk_font() 注册 mplfonts 自带的 Noto Sans CJK SC，中文不会变成方框。
运行：python book/figures/make_timeline.py
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clipedu.notebook import figure_style, register_cjk_font  # noqa: E402

OUT = Path(__file__).resolve().parent / "generated" / "timeline.png"

# (年份, 名称, 类别, bib 键)。类别决定颜色与上下位置。
EVENTS = [
    (2017, "Transformer", "单模态基础", "vaswani2017attention"),
    (2018, "BERT", "单模态基础", "devlin2019bert"),
    (2019, "ViLBERT / LXMERT", "融合式预训练", "lu2019vilbert"),
    (2020, "ERNIE-ViL", "融合式预训练", "yu2021ernievil"),
    (2021, "CLIP / ALIGN", "对比式双塔", "radford2021clip"),
    (2021, "DALL·E", "生成", "ramesh2021dalle"),
    (2021, "文澜 BriVL", "对比式双塔", "huo2021wenlan"),
    (2021, "M6", "融合式预训练", "lin2021m6"),          # 统一的编码-解码 Transformer，不是双塔
    (2021, "Florence", "对比式双塔", "yuan2021florence"),
    (2022, "悟空 Wukong", "对比式双塔", "gu2022wukong"),
    (2022, "Flamingo", "多模态大语言模型", "alayrac2022flamingo"),
    (2022, "DALL·E 2", "生成", "ramesh2022dalle2"),
    (2022, "Chinese-CLIP / AltCLIP", "对比式双塔", "yang2022chineseclip"),
    (2023, "LLaVA", "多模态大语言模型", "liu2023llava"),
    (2023, "Qwen-VL / CogVLM", "多模态大语言模型", "bai2023qwenvl"),
    (2023, "SigLIP", "对比式双塔", "zhai2023siglip"),
]

COLORS = {
    "单模态基础": "#7f7f7f",
    "融合式预训练": "#1f77b4",
    "对比式双塔": "#d62728",
    "生成": "#2ca02c",
    "多模态大语言模型": "#9467bd",
}


def layout(events):
    """同一年的事件上下交错排开，返回每个事件的 (x, y)。"""
    seen: dict[int, int] = {}
    points = []
    for year, *_ in events:
        k = seen.get(year, 0)
        seen[year] = k + 1
        sign = 1 if k % 2 == 0 else -1
        points.append((year, sign * (1 + k // 2 * 0.9)))
    return points


def make_figure(path: Path = OUT) -> Path:
    figure_style()   # 全书插图样式，含“图中文字重叠”检查（clipedu.figure_overlap）
    register_cjk_font()
    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.axhline(0, color="black", linewidth=1)
    for (year, name, kind, _), (x, y) in zip(EVENTS, layout(EVENTS)):
        ax.plot([x, x], [0, y], color=COLORS[kind], linewidth=1)
        ax.annotate(name, (x, y), ha="center", va="bottom" if y > 0 else "top", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.25", fc="white", ec=COLORS[kind]))
    for kind, color in COLORS.items():
        ax.scatter([], [], color=color, label=kind)
    years = sorted({e[0] for e in EVENTS})
    ax.set_xticks(years)
    ax.set_xlim(years[0] - 0.6, years[-1] + 0.6)
    ax.set_ylim(-3.6, 3.6)
    ax.set_yticks([])
    ax.set_xlabel("论文首次公开的年份")
    ax.set_title("从单模态预训练到多模态大模型：代表性工作时间线")
    ax.legend(loc="upper left", fontsize=8, ncol=5, frameon=False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # 缺字时 matplotlib 会发 "Glyph ... missing" 警告；把它变成错误，宁可失败也不出方框图。
        warnings.filterwarnings("error", message=".*Glyph.*missing.*")
        warnings.filterwarnings("error", message="图中文字重叠")   # 注释框互相压住也算失败
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(make_figure())

"""插图里的文字不许互相压住（见 issue 17 与前言 sec-preface-howto）。

子图多、标题长时，matplotlib 会让相邻子图的标题、总标题与子图标题叠在一起；图画出来才看得到，单看代码看不出。
``figure_style()`` 把 :func:`watch_overlaps` 登记为 pyplot 新建图时的钩子（rcParams ``figure.hooks``）：
每次画图后检查标题、坐标轴标签与 ``ax.text`` 注释的外框，有重叠就发出一条 ``UserWarning``，
消息以“图中文字重叠”开头。构建书时 ``scripts/check_notebook_outputs.py`` 在输出里见到它就让构建失败。
"""
from __future__ import annotations

import warnings

OVERLAP_MESSAGE = "图中文字重叠 / overlapping text in figure"


def _texts(fig):
    """图里要检查的文字：总标题、每个子图的三个标题、坐标轴标签、ax.text 注释。刻度标签不查（它们由 matplotlib 自己避让）。"""
    out = []
    if getattr(fig, "_suptitle", None) is not None:
        out.append(fig._suptitle)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        out += list(ax.texts)
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig, renderer=None, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """返回互相重叠的文字对 ``[(文字 a, 文字 b), ...]``；外框各向内收 ``tolerance`` 像素，刚好相接不算。"""
    renderer = renderer or fig.canvas.get_renderer()
    boxes = []
    for text in _texts(fig):
        box = text.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            boxes.append((text.get_text(), box.expanded(1, 1).padded(-tolerance)))
    pairs = []
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            if box_a.overlaps(box_b):
                pairs.append((a, b))
    return pairs


def _warn_on_draw(event) -> None:
    pairs = overlapping_texts(event.canvas.figure, event.renderer)
    if pairs:
        shown = "；".join(f"“{a}” 与 “{b}”" for a, b in pairs[:3])
        warnings.warn(f"{OVERLAP_MESSAGE}：{shown}。请加大 figsize、减少每行子图数、换行或用 layout='constrained'",
                      UserWarning, stacklevel=2)


def watch_overlaps(fig) -> None:
    """pyplot 的 ``figure.hooks`` 钩子：图每画一次就检查一次文字重叠。"""
    fig.canvas.mpl_connect("draw_event", _warn_on_draw)


__all__ = ["overlapping_texts", "watch_overlaps", "OVERLAP_MESSAGE"]

"""clipedu.notebook.figure_style：书中插图在深色模式下也可读（不透明白底）、字号够大、配色一致。"""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import clipedu  # noqa: E402
from clipedu.notebook import PALETTE, figure_style  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_rc():
    rc = matplotlib.rcParams.copy()
    yield
    matplotlib.rcParams.update(rc)


def _png_rgba(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return plt.imread(buf)


def test_setup_notebook_applies_the_house_style():
    matplotlib.rcParams["font.size"] = 6
    clipedu.setup_notebook(quiet=True)
    assert matplotlib.rcParams["font.size"] >= 10
    assert matplotlib.rcParams["savefig.transparent"] is False


def test_figures_are_opaque_white_not_transparent():
    figure_style()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_title("title")
    rgba = _png_rgba(fig)
    # 每个像素都不透明（深色模式下不会变成“黑底黑字”），角上是白色
    assert rgba.shape[2] == 4 and rgba[..., 3].min() == 1.0
    np.testing.assert_allclose(rgba[0, 0, :3], 1.0)


def test_same_colours_for_same_things():
    figure_style()
    cycle = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    assert cycle[:4] == [PALETTE[k] for k in ("image", "text", "seen", "heldout")]
    # 同一概念的两对颜色彼此可分
    assert PALETTE["image"] != PALETTE["text"] and PALETTE["seen"] != PALETTE["heldout"]
    assert PALETTE["clipedu"] != PALETTE["open_clip"]


def test_overlapping_titles_are_reported_when_drawn():
    """setup_notebook 的样式登记了 figure.hooks：子图标题压住总标题或彼此压住时，画图会发出“图中文字重叠”警告。"""
    from clipedu.figure_overlap import OVERLAP_MESSAGE, overlapping_texts

    clipedu.setup_notebook(quiet=True)
    fig, axes = plt.subplots(1, 6, figsize=(7, 1.6))
    for ax, name in zip(axes, ["圆形", "正方形", "三角形", "星形", "十字形", "菱形"]):
        ax.set_title(f"画面里有没有白色的{name}？")
    fig.suptitle("下游任务：认形状（颜色、大小、位置都不算）")
    with pytest.warns(UserWarning, match=OVERLAP_MESSAGE.split(" / ")[0]):
        fig.canvas.draw()
    assert len(overlapping_texts(fig)) >= 5
    plt.close(fig)

    # 同样的内容，拉宽、分两行并用 constrained 布局：没有重叠，也没有警告
    fig, axes = plt.subplots(2, 3, figsize=(9, 4.5), layout="constrained")
    for ax, name in zip(axes.flat, ["圆形", "正方形", "三角形", "星形", "十字形", "菱形"]):
        ax.set_title(f"有没有白色的{name}？")
    fig.suptitle("下游任务：认形状")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fig.canvas.draw()
    assert overlapping_texts(fig) == []
    plt.close(fig)


def test_wrap_title_balances_lines_and_keeps_every_character():
    from clipedu.notebook import wrap_title

    assert wrap_title("图中有红色的星形吗？") == "图中有红色的星形吗？"              # 10 个字，不折
    assert wrap_title("画面里有没有白色的十字形？") == "画面里有没有白\n色的十字形？"   # 7 + 6，不是 10 + 3
    for text in ("图中有一个位于左上方的小号白色菱形", "这是一个绿色的正方形。", "一"):
        for width in (1, 4, 9):
            lines = wrap_title(text, width).split("\n")
            assert "".join(lines) == text and max(map(len, lines)) <= width
            assert max(map(len, lines)) - min(map(len, lines)) <= 1                  # 各行一样长（至多差一个字）
    with pytest.raises(ValueError, match="width"):
        wrap_title("x", 0)

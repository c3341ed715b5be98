"""检查执行过的笔记本输出，并把每张图存成 PNG 供人逐张查看（issue 17）。

- 不允许出现 matplotlib 的缺字形 / 找不到字体警告（图里会有豆腐块），也不允许“图中文字重叠”警告
  （clipedu.figure_overlap：标题、坐标轴标签互相压住）；
- 每张图都不透明：透明背景上的黑字在书的深色模式下看不见（clipedu.setup_notebook 设了白底）；
- ``--extract DIR``：把每张图写成 ``DIR/<笔记本>__cell<序号>_<k>.png``，CI 的截图目录里就有全书每一张图。

用法：python scripts/check_notebook_outputs.py [--extract _build/screenshots/figures] _stage/notebooks/*.ipynb
（由 build_book.sh 在 nbmake 之后调用）
"""
import argparse
import base64
import io
import json
import re
import sys
from pathlib import Path

from PIL import Image

# "Glyph 23545 (\N{CJK UNIFIED IDEOGRAPH-5BF9}) missing from font(s) DejaVu Sans." / "findfont: Font family ... not found"
BAD = re.compile(r"Glyph \d+ .*missing from|missing from (current )?font|findfont: Font family .* not found"
                 # clipedu.figure_overlap：标题、标签互相压住
                 r"|图中文字重叠")


def output_texts(nb: dict):
    for index, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            text = out.get("text") or "".join(out.get("data", {}).get("text/plain", ""))
            yield index, "".join(text) if isinstance(text, list) else text


def output_pngs(nb: dict):
    """(单元格序号, 该单元格里的第几张图, PNG 字节)。"""
    for index, cell in enumerate(nb.get("cells", [])):
        k = 0
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("image/png")
            if data:
                yield index, k, base64.b64decode("".join(data) if isinstance(data, list) else data)
                k += 1


def transparent_fraction(png: bytes) -> float:
    """不完全不透明的像素所占比例（没有 alpha 通道时为 0）。"""
    img = Image.open(io.BytesIO(png))
    if "A" not in img.getbands() and "transparency" not in img.info:
        return 0.0
    alpha = img.convert("RGBA").getchannel("A")
    hist = alpha.histogram()
    return 1 - hist[255] / max(1, sum(hist))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", type=Path, help="把每张图写进这个目录")
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    problems, n_figures = [], 0
    if args.extract:
        args.extract.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for index, text in output_texts(nb):
            for line in text.splitlines():
                if BAD.search(line):
                    problems.append(f"{path.name} 第 {index} 个单元格：{line.strip()[:200]}")
        for index, k, png in output_pngs(nb):
            n_figures += 1
            if transparent_fraction(png) > 0:
                problems.append(f"{path.name} 第 {index} 个单元格的第 {k + 1} 张图有透明背景（深色模式下看不清；"
                                "请用 clipedu.setup_notebook() 的白底样式）")
            if args.extract:
                (args.extract / f"{path.stem}__cell{index:02d}_{k}.png").write_bytes(png)
    if problems:
        print("笔记本输出有问题（图中文字会显示为方块，或深色模式下看不清）：")
        print("\n".join(problems))
        return 1
    where = f"，已写到 {args.extract}" if args.extract else ""
    print(f"检查了 {len(args.notebooks)} 个笔记本的输出与 {n_figures} 张图：没有缺字形警告，没有透明背景{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""检查执行过的笔记本输出：不允许出现 matplotlib 的缺字形 / 找不到字体警告（图里会有豆腐块）。

用法：python scripts/check_notebook_outputs.py _stage/notebooks/*.ipynb   （由 build_book.sh 在 nbmake 之后调用）
"""
import json
import re
import sys
from pathlib import Path

# "Glyph 23545 (\N{CJK UNIFIED IDEOGRAPH-5BF9}) missing from font(s) DejaVu Sans." / "findfont: Font family ... not found"
BAD = re.compile(r"Glyph \d+ .*missing from|missing from (current )?font|findfont: Font family .* not found")


def output_texts(nb: dict):
    for index, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            text = out.get("text") or "".join(out.get("data", {}).get("text/plain", ""))
            yield index, "".join(text) if isinstance(text, list) else text


def main(paths: list[str]) -> int:
    problems = []
    for path in map(Path, paths):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for index, text in output_texts(nb):
            for line in text.splitlines():
                if BAD.search(line):
                    problems.append(f"{path.name} 第 {index} 个单元格：{line.strip()[:160]}")
    if problems:
        print("笔记本输出里有缺字形 / 字体警告（图中文字会显示为方块；请在开头调用 clipedu.setup_notebook()）：")
        print("\n".join(problems))
        return 1
    print(f"检查了 {len(paths)} 个笔记本的输出：没有缺字形警告")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""书里的代码不横向滚动：笔记本代码行与书中 literalinclude 展示的库代码行都放得进版心。

版心宽度：1280 px 的窗口里代码块内容区约 740 px，等宽字体 14 px（DejaVu Sans Mono，常见等宽字体里
最宽的一种）每列 8.4 px，放得下 88 列（book/_assets/cjk.css 收窄了右侧目录与留白；
tests/browser/test_layout.py 在真实浏览器里核对）。上限取 88 列，与库代码的换行宽度一致；
笔记本代码按 84 列排版，留出余量。中文等全角字符算两列（Unicode East Asian Width 为 W 或 F；
实际字形 14 px 宽，比两列的 16.8 px 窄，所以这样算偏保守）。
"""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 88
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# ```{literalinclude} ../clipedu/model.py 之后若干行 :option: value
INCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)\s*\n((?:\s*:[\w-]+:.*\n)*)")


def display_width(line: str) -> int:
    """等宽字体里一行占几列：全角（W/F）字符两列，其余一列；制表符按 4 列。"""
    line = line.expandtabs(4)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def too_wide(lines, limit=LIMIT):
    """返回 [(行号, 宽度, 行)]：宽度超过 limit 的行（行号从 1 起）。"""
    return [(n, display_width(l), l) for n, l in enumerate(lines, 1) if display_width(l) > limit]


def test_display_width_counts_cjk_double():
    assert display_width("abc") == 3
    assert display_width("对比学习") == 8
    assert display_width("图→文，τ=0.07") == 2 + 1 + 2 + 2 + 6  # 箭头与 τ 是窄字符，全角逗号两列
    assert too_wide(["x" * 88, "中" * 44, "中" * 45]) == [(3, 90, "中" * 45)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_fits_the_column(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    bad = []
    for k, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        for n, w, line in too_wide("".join(cell["source"]).split("\n")):
            bad.append(f"  单元 {k}（id {cell.get('id')}）第 {n} 行，{w} 列：{line.strip()[:60]}")
    assert not bad, (f"{path.name}: {len(bad)} 行代码超过 {LIMIT} 列（1280 px 下要横向滚动）；"
                     "请拆短：命名中间值、注释单独成行\n" + "\n".join(bad))


def _markdown_sources():
    """书中所有 markdown：book/*.md 与笔记本的 markdown 单元，返回 [(来源, 所在目录, 文本)]。"""
    out = [(p.relative_to(ROOT), p.parent, p.read_text(encoding="utf-8")) for p in sorted((ROOT / "book").glob("*.md"))]
    for p in NOTEBOOKS:
        cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        out.append((p.relative_to(ROOT), p.parent, text + "\n"))
    return out


def included_lines(base: Path, target: str, options: dict) -> tuple[Path, int, list[str]]:
    """按 Sphinx literalinclude 的规则取出被展示的行：返回（文件, 首行行号, 行列表）。"""
    from sphinx.pycode import ModuleAnalyzer

    path = (base / target).resolve()
    lines = path.read_text(encoding="utf-8").split("\n")
    start, end = 1, len(lines)
    if "pyobject" in options:
        tags = ModuleAnalyzer.for_file(str(path), "").find_tags()
        assert options["pyobject"] in tags, f"{path.name} 里没有 {options['pyobject']}"
        start, end = tags[options["pyobject"]][1:]
    return path, start, lines[start - 1:end]


def test_included_library_code_fits_the_column():
    bad, n_includes = [], 0
    for source, base, text in _markdown_sources():
        for m in INCLUDE.finditer(text):
            options = dict(re.findall(r":([\w-]+):\s*(.*)", m.group(2)))
            if not m.group(1).endswith(".py"):
                continue
            n_includes += 1
            path, first, lines = included_lines(base, m.group(1), {k: v.strip() for k, v in options.items()})
            for n, w, line in too_wide(lines):
                bad.append(f"  {path.relative_to(ROOT)}:{first + n - 1}（{w} 列，{source} 展示）：{line.strip()[:50]}")
    assert n_includes > 10, f"只找到 {n_includes} 处 literalinclude，正则可能失效"
    assert not bad, f"书中展示的库代码有 {len(bad)} 行超过 {LIMIT} 列：\n" + "\n".join(sorted(set(bad)))


FENCE = re.compile(r"^(`{3,}|~{3,})([^\n`]*)\n(.*?)^\1\s*$", re.S | re.M)
INCLUDED_MD = re.compile(r"```\{include\}\s+(\S+\.md)")


def _prose_files():
    """book/*.md，以及它们用 {include} 引进来的 Markdown（如 benchmarks/results/*.md）。"""
    files = sorted((ROOT / "book").glob("*.md"))
    for p in list(files):
        files += [(p.parent / m).resolve() for m in INCLUDED_MD.findall(p.read_text(encoding="utf-8"))]
    return sorted(set(files))


def test_fenced_code_in_prose_fits_the_column():
    """正文与被 include 的结果文件里的代码块（bash、python、无语言或 {code-block}）不超过 88 列。"""
    bad, n_blocks = [], 0
    for path in _prose_files():
        for m in FENCE.finditer(path.read_text(encoding="utf-8")):
            info = m.group(2).strip()
            if info.startswith("{") and not info.startswith(("{code-block}", "{code}")):
                continue   # mermaid、math、练习等指令块不是代码
            n_blocks += 1
            for n, w, line in too_wide(m.group(3).split("\n")):
                bad.append(f"  {path.relative_to(ROOT)}（{w} 列）：{line.strip()[:60]}")
    assert n_blocks > 20, f"只找到 {n_blocks} 个代码块，正则可能失效"
    assert not bad, f"正文里有 {len(bad)} 行代码超过 {LIMIT} 列：\n" + "\n".join(bad)

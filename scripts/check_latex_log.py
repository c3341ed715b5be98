"""检查 PDF 版最后一遍 XeLaTeX 的日志：缺字、溢出版心、未定义的引用都让构建失败。

    python scripts/check_latex_log.py _stage_pdf/_build/latex/book.log [--json]

由 scripts/build_book.sh（EDITION=pdf、student-pdf）在 latexmk 之后调用，tests/pdf/test_pdf.py 也用它。
latexmk 每一遍都覆盖 book.log，所以这里读到的就是最后一遍（交叉引用都已解析）的日志。

检查项（任何一项不为空即失败，退出码 1）：

- ``missing_glyphs``：“Missing character”——字体里没有这个字，PDF 里会是空白或豆腐块；
- ``overfull_hbox``：比版心宽出 HBOX_TOLERANCE_PT 以上的行（文字伸进页边，严重时被裁掉）；
- ``overfull_vbox``：比版心高出 VBOX_TOLERANCE_PT 以上的页；
- ``undefined_refs``：未定义的交叉引用或文献引用（PDF 里会印成 ??）；
- ``font_substitutions``：请求的字形（如某字体的斜体）不存在，被换成了别的字体；
- ``duplicate_labels``：同一个标签定义了两次（引用可能指错地方）。
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HBOX_TOLERANCE_PT = 3.0   # 1 mm 左右：肉眼看不出伸进了页边
VBOX_TOLERANCE_PT = 6.0   # 不到半行：页脚不会被压住

_MISSING = re.compile(r"Missing character: There is no (.) \((U\+[0-9A-F]+)\) in font ([^\n!]*)")
_OVERFULL = re.compile(r"Overfull \\([hv])box \(([\d.]+)pt too \w+\) "
                       r"(?:in paragraph at lines (\d+)--\d+|in alignment at lines (\d+)--\d+|detected at line (\d+))")
_UNDEFINED = re.compile(r"LaTeX Warning: (?:Reference|Citation|Hyper reference) `([^']+)' on page (\d+) undefined")
_FONT_SHAPE = re.compile(r"Font shape `([^']+)' undefined")
_MULTIPLY = re.compile(r"LaTeX Warning: Label `([^']+)' multiply defined")


def _unwrap(log: str) -> str:
    """TeX 把日志折成 79 列；把被折断的行接回去（折断处正好 79 个字符，XeTeX 按字符而不是字节数）。"""
    out, buf = [], ""
    for line in log.split("\n"):
        buf += line
        if len(line) != 79:
            out.append(buf)
            buf = ""
    out.append(buf)
    return "\n".join(out)


def check_log(text: str, hbox_tol: float = HBOX_TOLERANCE_PT, vbox_tol: float = VBOX_TOLERANCE_PT) -> dict:
    """返回 {检查项: [问题, …]}；全部为空表示通过。"""
    text = _unwrap(text)
    problems = {"missing_glyphs": [], "overfull_hbox": [], "overfull_vbox": [], "undefined_refs": [],
                "font_substitutions": [], "duplicate_labels": []}
    for char, code, font in _MISSING.findall(text):
        item = f"{code} {char}（{font.split('/')[0].strip()}）"
        if item not in problems["missing_glyphs"]:
            problems["missing_glyphs"].append(item)
    for kind, amount, par_line, align_line, at_line in _OVERFULL.findall(text):
        tol = hbox_tol if kind == "h" else vbox_tol
        if float(amount) > tol:
            line = par_line or align_line or at_line
            problems[f"overfull_{kind}box"].append(f"book.tex 第 {line} 行：{float(amount):.1f}pt")
    for label, page in _UNDEFINED.findall(text):
        problems["undefined_refs"].append(f"{label}（第 {page} 页）")
    problems["font_substitutions"] = sorted(set(_FONT_SHAPE.findall(text)))
    problems["duplicate_labels"] = sorted(set(_MULTIPLY.findall(text)))
    return problems


_NAMES = {
    "missing_glyphs": "缺字（missing glyph）",
    "overfull_hbox": f"行宽超出版心 {HBOX_TOLERANCE_PT}pt 以上（overfull hbox）",
    "overfull_vbox": f"页高超出版心 {VBOX_TOLERANCE_PT}pt 以上（overfull vbox）",
    "undefined_refs": "未定义的引用（undefined reference）",
    "font_substitutions": "字体被替换（font shape undefined）",
    "duplicate_labels": "重复的标签（multiply defined label）",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="检查 PDF 版的 XeLaTeX 日志")
    parser.add_argument("log", type=Path, help="book.log")
    parser.add_argument("--json", action="store_true", help="以 JSON 输出全部检查结果")
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"[check_latex_log] 找不到日志 {args.log}（log not found）：先构建 PDF", file=sys.stderr)
        return 1
    problems = check_log(args.log.read_text(encoding="utf-8", errors="replace"))
    if args.json:
        print(json.dumps(problems, ensure_ascii=False, indent=1))
    bad = {k: v for k, v in problems.items() if v}
    for key, items in bad.items():
        print(f"[check_latex_log] {_NAMES[key]}：{len(items)} 处", file=sys.stderr)
        for item in items[:20]:
            print(f"    {item}", file=sys.stderr)
    if not bad:
        print(f"[check_latex_log] {args.log.name}：没有缺字、溢出版心的行或未定义的引用")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

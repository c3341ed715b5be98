"""PDF 版与离线包的辅助代码（不需要构建好的书，属于快速测试层）。

- scripts/check_latex_log.py 真的能从 XeLaTeX 日志里认出缺字、伸出版心的行、未定义的引用（含被 TeX 折成 79 列的行）；
- book/_ext/notebook_download.py 清掉输出后，单元源码与元数据不变；
- scripts/make_offline.py 改写网页的三处（mermaid 脚本、MathJax 输出、搜索摘要）只改该改的地方。
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import check_latex_log  # noqa: E402
import make_offline  # noqa: E402
from notebook_download import clear_outputs  # noqa: E402

LOG = """\
This is XeTeX, Version 3.141592653-2.6-0.999994 (TeX Live 2022/Debian) (preloaded format=xelatex)
Missing character: There is no ᾱ (U+1FB1) in font Latin Modern Roman 10 Regular
/OT:script=latn;language=dflt;mapping=tex-text;!
Overfull \\hbox (12.5pt too wide) in paragraph at lines 120--121
Overfull \\hbox (2.0pt too wide) in paragraph at lines 130--130
Overfull \\vbox (28.8pt too high) detected at line 6510
Overfull \\hbox (7.0pt too wide) in alignment at lines 200--210
LaTeX Warning: Reference `notebooks/06_digits:ex-ch06-uppercase' on page 69 undefined on input line 4672.
LaTeX Font Warning: Font shape `TU/NotoSansMonoCJKSC(1)/m/it' undefined
LaTeX Warning: Label `book/preface:sec-preface-howto' multiply defined.
"""


def test_check_log_finds_every_kind_of_problem():
    problems = check_latex_log.check_log(LOG)
    assert problems["missing_glyphs"] == ["U+1FB1 ᾱ（Latin Modern Roman 10 Regular）"]   # 折成两行（79 个字符处）的也认得
    assert problems["overfull_hbox"] == ["book.tex 第 120 行：12.5pt", "book.tex 第 200 行：7.0pt"]   # 2pt 在容差内
    assert problems["overfull_vbox"] == ["book.tex 第 6510 行：28.8pt"]
    assert problems["undefined_refs"] == ["notebooks/06_digits:ex-ch06-uppercase（第 69 页）"]
    assert problems["font_substitutions"] == ["TU/NotoSansMonoCJKSC(1)/m/it"]
    assert problems["duplicate_labels"] == ["book/preface:sec-preface-howto"]


def test_check_log_clean_log_passes(tmp_path):
    log = tmp_path / "book.log"
    log.write_text("This is XeTeX\nOverfull \\hbox (0.5pt too wide) in paragraph at lines 1--1\n", encoding="utf-8")
    assert not any(check_latex_log.check_log(log.read_text(encoding="utf-8")).values())
    assert check_latex_log.main([str(log)]) == 0
    log.write_text(LOG, encoding="utf-8")
    assert check_latex_log.main([str(log)]) == 1


def test_clear_outputs_keeps_cells_and_metadata():
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {"tags": ["solution"]}, "source": ["# 标题"]},
            {"cell_type": "code", "execution_count": 7, "metadata": {"execution": {"iopub": 1}, "tags": ["x"]},
             "outputs": [{"output_type": "stream", "name": "stdout", "text": ["hi"]}], "source": ["print('hi')"]},
        ],
        "metadata": {"kernelspec": {"name": "python3"}, "widgets": {"state": {}}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    before = json.dumps(nb)
    clean = clear_outputs(nb)
    assert json.dumps(nb) == before, "clear_outputs 不应修改传入的笔记本"
    assert clean["cells"][1]["outputs"] == [] and clean["cells"][1]["execution_count"] is None
    assert clean["cells"][1]["metadata"] == {"tags": ["x"]} and clean["cells"][0] == nb["cells"][0]
    assert clean["metadata"] == {"kernelspec": {"name": "python3"}}
    assert [c["source"] for c in clean["cells"]] == [c["source"] for c in nb["cells"]]


def test_make_file_url_safe_rewrites_only_what_it_must(tmp_path):
    site = tmp_path / "html"
    (site / "_static" / "mathjax").mkdir(parents=True)
    (site / "_static" / "mathjax" / "tex-svg-full.js").write_text("//", encoding="utf-8")
    (site / "_static" / "documentation_options.js").write_text(
        "const DOCUMENTATION_OPTIONS = {\n    SHOW_SEARCH_SUMMARY: true,\n};", encoding="utf-8")
    module = '<script type="module">import mermaid from "./_static/mermaid/mermaid.esm.min.mjs";\nrun();</script>\n'
    (site / "search.html").write_text(f"<html><head>{module}</head><body>搜索</body></html>", encoding="utf-8")
    page = '<html><head><script defer src="_static/mathjax/tex-chtml-full.js"></script></head><body>$x$</body></html>'
    (site / "plain.html").write_text(page, encoding="utf-8")
    stats = make_offline.make_file_url_safe(site)
    assert stats == {"mermaid": 0, "mathjax_pages": 1}
    assert "import mermaid" not in (site / "search.html").read_text(encoding="utf-8")
    assert (site / "plain.html").read_text(encoding="utf-8") == page.replace("tex-chtml-full.js", "tex-svg-full.js")
    options = (site / "_static" / "documentation_options.js").read_text(encoding="utf-8")
    assert 'SHOW_SEARCH_SUMMARY: location.protocol !== "file:",' in options

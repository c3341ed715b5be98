"""正文与笔记本里不能有控制字符：Python 非 raw 字符串写入的 "\\beta" 会变成退格符，
MathJax 随后报 “Math input error”（第 8 章出过一次）。"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FILES = sorted(ROOT.glob("book/*.md")) + sorted(ROOT.glob("notebooks/*.ipynb"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_control_characters(path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        text = "".join("".join(c["source"]) for c in json.loads(text)["cells"])
    hits = [f"第 {text.count(chr(10), 0, m.start()) + 1} 行：{m.group()!r}"
            for m in CONTROL.finditer(text)]
    assert not hits, f"{path.name} 含控制字符：{hits[:5]}"

"""book/_ext/cjk_softbreak.py：中文段落里的软换行在 HTML 里不显示成空格；代码、中西文之间的换行不动。"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import cjk_softbreak  # noqa: E402


@pytest.mark.parametrize("src, want", [
    ("目录\n不受影响", "目录不受影响"),
    ("提示一次）。\n同一个", "提示一次）。同一个"),
    ("中文\n  缩进的续行", "中文缩进的续行"),
    ("中文\nEnglish", "中文\nEnglish"),       # 中西文之间：保留（显示为空格）
    ("end.\n中文", "end.\n中文"),
    ("一\n\n二", "一\n\n二"),                  # 空行是段落分隔，不是软换行
])
def test_join_rule(src, want):
    assert cjk_softbreak.join_cjk_lines(src) == want


def _doctree(text: str):
    from docutils.core import publish_doctree
    from myst_parser.parsers.docutils_ import Parser

    doc = publish_doctree(text, parser=Parser())
    transform = cjk_softbreak.JoinCJKSoftBreaks.__new__(cjk_softbreak.JoinCJKSoftBreaks)
    transform.document = doc
    transform.apply()
    return doc


def test_transform_uses_neighbours_and_keeps_code():
    """MyST 把每个软换行做成单独的 "\\n" 节点；同一段有好几个时，每个都按自己两侧的字判断（曾按内容找位置，全错位）。"""
    doc = _doctree("默认在 `~/.cache/runs/`\n之下（变量 `X` 可以\n换位置，\n不受影响。\n\n```\n代码\n里的换行\n```\n")
    para, code = doc.children[0], doc.children[1]
    assert para.astext() == "默认在 ~/.cache/runs/\n之下（变量 X 可以换位置，不受影响。"
    assert code.astext().strip() == "代码\n里的换行"


def test_empty_text_nodes_are_skipped():
    """别的转换留下的空文字节点挡在换行和下一个字之间时，要越过它去看。"""
    from docutils import nodes

    doc = _doctree("进一步做\n**细粒度对齐**")
    para = doc.children[0]
    para.insert(2, nodes.Text(""))
    transform = cjk_softbreak.JoinCJKSoftBreaks.__new__(cjk_softbreak.JoinCJKSoftBreaks)
    transform.document = doc
    transform.apply()
    assert para.astext() == "进一步做细粒度对齐"


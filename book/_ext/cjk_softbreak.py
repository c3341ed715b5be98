"""中文段落里的软换行不变成空格。

Markdown 源文件按行折行，一个段落里的换行（软换行）在 HTML 里原样保留，浏览器把它显示成一个空格：
“目录\\n不受影响”显示成“目录 不受影响”，“。\\n同一个”在句号后面多出一个空格。西文靠这个空格分词，中文不需要。
这里在写出之前（交叉引用已解析），把两侧都是中文字符（汉字或全角标点）的换行连同下一行的缩进一起删掉。
只动正文文字：代码、行内代码、公式、原始 HTML 里的换行不动；中文与西文之间的换行仍显示为空格
（中西文之间留一个空格本来就是常见的排版习惯）。PDF 那边 xeCJK 本来就这样处理，这里删掉也不影响它。
顺带的好处：网页搜索里跨行的中文词也能搜到了。
"""
from __future__ import annotations

import re

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

# 汉字（含扩展 A）、CJK 符号与标点（、。「」…）、全角形式（，：；！？（）等）、中文引号与省略号
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef\u2018\u2019\u201c\u201d\u2026\u2014"
SOFT_BREAK = re.compile(rf"(?<=[{_CJK}])[ \t]*\n[ \t]*(?=[{_CJK}])")
_SKIP = (nodes.literal_block, nodes.literal, nodes.math, nodes.math_block, nodes.raw, nodes.comment,
         nodes.doctest_block)


def join_cjk_lines(text: str) -> str:
    """删掉两侧都是中文字符的换行（及其两边的空白）。"""
    return SOFT_BREAK.sub("", text)


class JoinCJKSoftBreaks(SphinxPostTransform):
    # 写出前的后处理：交叉引用（{ref}、{numref}）这时已换成章节标题，行首的引用也能按它的第一个字判断
    default_priority = 900

    def apply(self, **kwargs) -> None:
        for node in list(_prose_texts(self.document)):
            if "\n" not in node:
                continue
            # MyST 把软换行单独做成一个 "\n" 文字节点：两侧的字要从相邻的兄弟节点里看。
            # 位置按身份找：Text 是 str 的子类，list.index 与 Element.replace 都按内容比较，
            # 会找到同一段里第一个同样是 "\n" 的节点
            parent = node.parent
            k = next(i for i, child in enumerate(parent.children) if child is node)
            left, right = _near(parent, k, -1)[-1:], _near(parent, k, +1)[:1]
            text = str(node)
            joined = join_cjk_lines(left + text + right)
            new = joined[len(left):len(joined) - len(right)]
            if new != text:
                parent[k] = nodes.Text(new)


def _near(parent, k: int, step: int) -> str:
    """第 k 个子节点旁边（跳过空的文字节点）第一个有文字的兄弟节点的文字；没有时为空串。"""
    i = k + step
    while 0 <= i < len(parent):
        text = parent[i].astext()
        if text:
            return text
        i += step
    return ""


def _prose_texts(node):
    """正文里的文字节点：不进入代码、公式、原始 HTML 这些子树。"""
    for child in node.children:
        if isinstance(child, nodes.Text):
            yield child
        elif not isinstance(child, _SKIP):
            yield from _prose_texts(child)


def setup(app):
    app.add_post_transform(JoinCJKSoftBreaks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""本地 Sphinx 扩展：本书练习的编号、标题与学生版检查（见教学指南 sec-teaching-student）。

sphinx-exercise 1.2 做了练习与解答的大部分工作，这里补上四件它不做的事：

1. **按章编号。** sphinx-exercise 借用 Sphinx 的 numfig 给练习编号；本书的目录不自动编号
   （章号写在标题里），于是全书练习只有一个计数器（练习 1 … 练习 60）。这里在 Sphinx 算完编号之后，
   按文档所属的章重新编号：``book/ch03_clip``、``notebooks/03_training``、``notebooks/03_inference``
   都属于第 3 章，其中的练习依次是“练习 3.1、3.2……”。不属于任何一章的页面（如教学指南）
   用 ``zh_exercise_prefixes`` 里给的前缀（教学指南为 T：练习 T.1）。
2. **全角括号。** 练习标题（难度与用时，如“★★ · 约 20 分钟”）由 sphinx-exercise 放进半角括号；
   中文正文用全角括号，这里换成（）。
3. **“解答”二字。** sphinx-exercise 1.2.1 的 zh_CN 消息目录只翻译了 "Solution to"，而
   ``exercise_style: solution_follow_exercise`` 用的标题是 "Solution"，这里译成“解答”。
4. **学生版自检。** 学生版（``EDITION=student bash scripts/build_book.sh``）在构建前已由
   ``student_edition.py`` 从副本里删掉全部解答；``zh_student_edition: true`` 时，本扩展再检查每页的
   文档树，若还有解答节点就发出警告（严格构建下即失败），保证发给学生的书里没有漏网的解答。
"""
from __future__ import annotations

import re

import sphinx_exercise.directive as _directive
from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

_ZH_CN = {"Solution": "解答"}
# 文档名 → 章号：book/ch03_clip → 3，notebooks/03_training → 3
_CHAPTER_DOC = re.compile(r"^(?:book/ch|notebooks/)(\d{2})_")


def chapter_of(docname: str, prefixes: dict) -> str | None:
    """文档所属章的编号前缀（"3"、"T"）；不属于任何一章、也没在 prefixes 里给出时返回 None。"""
    if docname in prefixes:
        return str(prefixes[docname])
    m = _CHAPTER_DOC.match(docname)
    return str(int(m.group(1))) if m else None


def renumber_exercises(app, env):
    """把 Sphinx 的全书连续编号 (k,) 改成按章编号 (章, 章内序号)。"""
    prefixes = app.config.zh_exercise_prefixes or {}
    found = []  # (全书序号, 文档, id)
    for docname, fignumbers in env.toc_fignumbers.items():
        for node_id, number in fignumbers.get("exercise", {}).items():
            found.append((tuple(number), docname, node_id))
    counters: dict[str, int] = {}
    for _number, docname, node_id in sorted(found):
        chapter = chapter_of(docname, prefixes)
        if chapter is None:
            logger.warning(f"练习不属于任何一章，无法按章编号（chapter of exercise unknown）：{docname}；"
                           f"请把它加进 _config.yml 的 zh_exercise_prefixes", location=docname)
            continue
        counters[chapter] = counters.get(chapter, 0) + 1
        env.toc_fignumbers[docname]["exercise"][node_id] = (chapter, counters[chapter])
    return []


class FullWidthExerciseTitle(SphinxPostTransform):
    """把 sphinx-exercise 放在标题里的 " (" 与 ")" 换成全角的（与）。"""

    default_priority = 21  # sphinx-exercise 在 20 解析标题

    def run(self, **kwargs):
        for node in self.document.findall(nodes.title):
            parent = node.parent
            if parent is None or not any(c.startswith(("exercise", "solution")) for c in parent.get("classes", [])):
                continue
            for text in list(node.findall(nodes.Text)):
                if str(text) in (" (", ")"):
                    text.parent.replace(text, nodes.Text("（" if str(text) == " (" else "）"))


def check_no_solutions(app, doctree):
    """学生版：页面里不应再有任何解答节点。"""
    if not app.config.zh_student_edition:
        return
    from sphinx_exercise.nodes import solution_node, solution_start_node

    for node in doctree.findall(lambda n: isinstance(n, (solution_node, solution_start_node))):
        logger.warning("学生版里仍有解答（solution left in student edition）：请检查 student_edition.py 的删除规则",
                       location=node)


def setup(app):
    app.add_config_value("zh_exercise_prefixes", {}, "env")
    app.add_config_value("zh_student_edition", False, "env")
    original = _directive.translate

    def translate(message):
        if str(app.config.language or "").startswith("zh") and message in _ZH_CN:
            return _ZH_CN[message]
        return original(message)

    _directive.translate = translate
    # Sphinx 的 TocTreeCollector 在 env-get-updated（优先级 500）里算编号；我们在它之后改写
    app.connect("env-get-updated", renumber_exercises, priority=900)
    app.connect("doctree-read", check_no_solutions)
    app.add_post_transform(FullWidthExerciseTitle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""散文章节（第 1、2、7、8、9 章）的练习：结构齐全，且解答里的代码真能运行。

每章至少 3 道练习、每道都有折叠的解答，至少一道动手题的解答里有 ```python 代码；
这里把解答中的代码逐块取出，在独立的命名空间里执行（代码里自带 assert）。
"""
import re
from pathlib import Path

import pytest
import torch

BOOK = Path(__file__).resolve().parents[2] / "book"
CHAPTERS = ["ch01_background.md", "ch02_concepts.md", "ch07_resources.md", "ch08_future.md", "ch09_faq.md"]

# 一个指令块：3 个以上反引号 + {exercise|solution} ... 到同样长度的闭合反引号。
_DIRECTIVE = re.compile(r"^(?P<fence>`{3,})\{(?P<kind>exercise|solution)\}(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=fence)\s*$",
                        flags=re.S | re.M)
_PYTHON = re.compile(r"^```python\n(.*?)^```\s*$", flags=re.S | re.M)


def _directives(name):
    return list(_DIRECTIVE.finditer((BOOK / name).read_text(encoding="utf-8")))


def _solution_snippets():
    for name in CHAPTERS:
        for m in _directives(name):
            if m["kind"] == "solution":
                for i, code in enumerate(_PYTHON.findall(m["body"])):
                    yield pytest.param(name, m["arg"].strip(), code, id=f"{name}:{m['arg'].strip()}:{i}")


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_ends_with_summary_and_exercises(name):
    text = (BOOK / name).read_text(encoding="utf-8")
    heads = re.findall(r"^## (.+)$", text, flags=re.M)
    assert heads[-2:] == ["小结", "练习"], f"{name} 应以 ## 小结、## 练习 结尾，实际为 {heads[-2:]}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_each_exercise_has_a_collapsed_solution(name):
    found = _directives(name)
    labels = [re.search(r":label:\s*(\S+)", m["body"])[1] for m in found if m["kind"] == "exercise"]
    solutions = {m["arg"].strip(): m["body"] for m in found if m["kind"] == "solution"}
    assert len(labels) >= 3, f"{name} 至少要有 3 道练习，实际 {len(labels)}"
    for label in labels:
        assert label in solutions, f"{name} 的练习 {label} 没有解答"
        assert ":class: dropdown" in solutions[label], f"{name} 的解答 {label} 应折叠（:class: dropdown）"
    hands_on = [lab for lab in labels if _PYTHON.search(solutions[lab])]
    assert hands_on, f"{name} 至少要有一道动手题（解答里含 python 代码）"


@pytest.mark.parametrize("name,label,code", list(_solution_snippets()))
def test_solution_code_runs(name, label, code):
    torch.set_num_threads(1)
    exec(compile(code, f"{name}:{label}", "exec"), {"__name__": "__exercise__"})

"""全书练习的写法、按章编号与学生版的删除规则（book/_ext/zh_exercise.py、book/_ext/student_edition.py）。

练习的约定（教学指南 sec-teaching-exercises）：

    ```{exercise} ★★ · 约 20 分钟
    :label: ex-ch03-patchify
    ```

标题是难度（★ 到 ★★★）加“ · 约 N 分钟”，可再接“ · 短名”；标签是 ex-chNN-名字，NN 是练习所在的章。
"""
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import student_edition  # noqa: E402
import zh_exercise  # noqa: E402

TITLE = re.compile(r"^(★|★★|★★★) · 约 [1-9]\d* 分钟( · \S.*)?$")
_OPEN = re.compile(r"^(`{3,}|:{3,})\{exercise(?:-start)?\}(?P<title>[^\n]*)\n(?P<body>(?::[^\n]*\n)*)", flags=re.M)
PREFIXES = {"book/teaching": "T"}


def _sources():
    """(文件相对路径, 行号, 文档名, Markdown 文本) —— book/*.md 整个文件，笔记本的每个 Markdown 单元。"""
    for path in sorted((ROOT / "book").glob("*.md")):
        yield path.relative_to(ROOT).as_posix(), 0, f"book/{path.stem}", path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.relative_to(ROOT).as_posix()}#cell{i}", 0, f"notebooks/{path.stem}", "".join(cell["source"])


def _exercises():
    for where, _, docname, text in _sources():
        for m in _OPEN.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            label = re.search(r":label:\s*(\S+)", m["body"])
            yield pytest.param(docname, m["title"].strip(), label[1] if label else "", id=f"{where}:{line}")


EXERCISES = list(_exercises())


def test_book_has_exercises():
    assert len(EXERCISES) >= 40


@pytest.mark.parametrize("docname,title,label", EXERCISES)
def test_exercise_title_and_label(docname, title, label):
    assert TITLE.match(title), (f"练习标题应为“★★ · 约 20 分钟”的格式（难度 ★–★★★、用时，可再接“ · 短名”），"
                                f"实际为“{title}”")
    chapter = zh_exercise.chapter_of(docname, PREFIXES)
    expected = f"ex-ch{int(chapter):02d}-" if chapter and chapter.isdigit() else "ex-teaching-"
    assert label.startswith(expected) and re.fullmatch(r"ex-[a-z0-9-]+", label), \
        f"练习标签应以 {expected} 开头、只含小写字母数字和连字符，实际为“{label}”"


def test_labels_are_unique():
    labels = [p.values[2] for p in EXERCISES]
    assert len(labels) == len(set(labels)), sorted(lab for lab in labels if labels.count(lab) > 1)


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_solution_cells_are_tagged(path):
    """可运行的解答：solution-start、中间的代码单元、solution-end 都打 solution 标签，且各自独占一个单元。"""
    nb = json.loads(path.read_text(encoding="utf-8"))
    inside = False
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        starts = bool(student_edition._GATE_START.search(src)) and cell["cell_type"] == "markdown"
        ends = bool(student_edition._GATE_END_BLOCK.search(src)) and cell["cell_type"] == "markdown"
        if starts or inside:
            assert student_edition.is_solution_cell(cell), f"{path.name} 第 {i} 个单元在解答里，应带 solution 标签"
            assert not re.search(r"\{exercise", src), f"{path.name} 第 {i} 个单元：练习与解答应分在不同单元"
        inside = (inside or starts) and not ends


# ---- 按章编号 ----

def test_chapter_of():
    assert zh_exercise.chapter_of("book/ch03_clip", {}) == "3"
    assert zh_exercise.chapter_of("notebooks/04_infonce", {}) == "4"
    assert zh_exercise.chapter_of("book/teaching", PREFIXES) == "T"
    assert zh_exercise.chapter_of("book/glossary", PREFIXES) is None


def test_renumber_exercises_per_chapter():
    # Sphinx 给的是全书连续编号 (k,)；按章改写后每章从 1 开始，顺序不变
    env = SimpleNamespace(toc_fignumbers={
        "book/ch03_clip": {"exercise": {"a": (1,)}},
        "notebooks/03_inference": {"exercise": {"b": (2,), "c": (3,)}, "figure": {"f": (1,)}},
        "notebooks/04_infonce": {"exercise": {"d": (4,)}},
        "book/teaching": {"exercise": {"e": (5,)}},
    })
    app = SimpleNamespace(config=SimpleNamespace(zh_exercise_prefixes=PREFIXES))
    zh_exercise.renumber_exercises(app, env)
    got = {k: v for fn in env.toc_fignumbers.values() for k, v in fn["exercise"].items()}
    assert got == {"a": ("3", 1), "b": ("3", 2), "c": ("3", 3), "d": ("4", 1), "e": ("T", 1)}
    assert env.toc_fignumbers["notebooks/03_inference"]["figure"] == {"f": (1,)}


# ---- 学生版 ----

MD = """## 练习

````{exercise} ★ · 约 5 分钟
:label: ex-ch09-a

题面 A。
````

````{solution} ex-ch09-a
:class: dropdown

解答 A 的秘密。

```python
print("秘密代码")
```
````

:::{exercise} ★★ · 约 10 分钟
:label: ex-ch09-b
题面 B。
:::

:::{solution} ex-ch09-b
解答 B 的秘密。
:::
"""


def test_strip_markdown_removes_solutions_keeps_exercises():
    text, count = student_edition.strip_markdown(MD)
    assert count == 2
    assert "秘密" not in text and "题面 A" in text and "题面 B" in text
    assert student_edition.count_exercises(text) == 2


def _cell(kind, src, tags=None):
    cell = {"cell_type": kind, "id": str(abs(hash(src)) % 10**8), "metadata": {"tags": tags} if tags else {},
            "source": src.splitlines(keepends=True)}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": ["秘密输出\n"]}], execution_count=1)
    return cell


def test_strip_notebook_removes_tagged_and_gated_cells():
    nb = {"cells": [
        _cell("markdown", "```{exercise} ★ · 约 5 分钟\n:label: ex-ch03-x\n题面 X。\n```"),
        _cell("markdown", "````{solution-start} ex-ch03-x\n:class: dropdown\n````\n秘密思路。", ["solution"]),
        _cell("code", "print('秘密代码')", ["solution"]),
        _cell("markdown", "````{solution-end}\n````", ["solution"]),
        # 标签漏打、且练习与解答挤在一个单元里（旧写法）：照样只删解答
        _cell("markdown", "```{exercise} ★ · 约 5 分钟\n:label: ex-ch03-y\n题面 Y。\n```\n\n"
                          "```{solution-start} ex-ch03-y\n:class: dropdown\n```\n秘密 Y。"),
        _cell("code", "print('秘密 Y 代码')"),
        _cell("markdown", "```{solution-end}\n```\n\n之后的正文。"),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    out, removed = student_edition.strip_notebook(nb)
    text = json.dumps(out, ensure_ascii=False)
    assert removed == 2 and "秘密" not in text
    assert "题面 X" in text and "题面 Y" in text and "之后的正文" in text
    assert [c["cell_type"] for c in out["cells"]] == ["markdown", "markdown", "markdown"]


def test_strip_notebook_rejects_unclosed_solution():
    nb = {"cells": [_cell("markdown", "```{solution-start} ex-ch03-x\n```\n")]}
    with pytest.raises(student_edition.StudentEditionError, match="solution-end"):
        student_edition.strip_notebook(nb)


def test_strip_stage_on_the_real_book(tmp_path):
    """把真实的 book/ 与 notebooks/ 复制一份删解答：练习一个不少，解答一个不剩。"""
    import shutil

    for name in ("book", "notebooks"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("_build", "_vendor", "figures"))
    before = {p.name: student_edition.count_exercises(student_edition._source_text(p))
              for p in [*(tmp_path / "book").glob("*.md"), *(tmp_path / "notebooks").glob("*.ipynb")]}
    report = student_edition.strip_stage(tmp_path)
    assert sum(report.values()) >= sum(before.values())     # 每道练习都有解答，全被删掉
    for p in [*(tmp_path / "book").glob("*.md"), *(tmp_path / "notebooks").glob("*.ipynb")]:
        text = student_edition._source_text(p)
        assert student_edition.count_exercises(text) == before[p.name]
        assert not student_edition._ANY_SOLUTION.search(text)
        if p.suffix == ".ipynb":
            assert not any(student_edition.is_solution_cell(c) for c in json.loads(p.read_text(encoding="utf-8"))["cells"])


def test_check_fresh_detects_stale_notebook(tmp_path):
    (tmp_path / "notebooks").mkdir()
    src = ROOT / "notebooks" / "04_infonce.ipynb"
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["执行结果\n"]}]
    (tmp_path / "notebooks" / src.name).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "notebooks" / src.name).write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    student_edition.check_fresh(tmp_path, repo)             # 只有输出不同：算新鲜
    nb["cells"][1]["source"] = ["print('改过了')\n"]
    (tmp_path / "notebooks" / src.name).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(student_edition.StudentEditionError, match="stale"):
        student_edition.check_fresh(tmp_path, repo)


def test_checkers_name_their_exercise():
    """clipedu.exercises 的每个检查器都在文档字符串里写明它对应的练习标签，且这个标签在书里存在。

    用 ast 读源文件而不导入 clipedu（导入 torch 要好几秒）。
    """
    import ast

    labels = {p.values[2] for p in EXERCISES}
    checkers = 0
    for path in sorted((ROOT / "clipedu" / "exercises").glob("ch*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
                checkers += 1
                named = re.findall(r"``(ex-ch\d\d-[a-z0-9-]+)``", ast.get_docstring(node) or "")
                assert named and set(named) <= labels, \
                    f"{path.name}:{node.name} 的文档字符串应写明书中存在的练习标签，实际为 {named}"
    assert checkers >= 10

"""学生版：从构建副本里删掉全部解答，练习与编号保留（见教学指南 sec-teaching-student）。

    python book/_ext/student_edition.py STAGE_DIR [--fresh-from REPO_DIR] [--check-only]

删除规则（与练习的写法一一对应，见 book_common 约定与教学指南）：

- Markdown（``book/*.md`` 与笔记本的 Markdown 单元）：整个 ```` ```{solution} ... ``` ```` 指令块，
  反引号或冒号围栏、任意长度都算；
- 笔记本：带 ``solution`` 标签的单元（``metadata.tags`` 含 ``"solution"``）。可运行的解答写成
  ``{solution-start}`` Markdown 单元 + 代码单元 + ``{solution-end}`` Markdown 单元，三者都打这个标签
  （标签漏打时，start 与 end 之间的单元也照样删掉）。

删完后，副本里若还有以 ``{solution`` 开头的指令，或者有练习在删除后少了（标签打错、把练习也删了），就报一行中文错误并以非零状态退出。
``--fresh-from`` 先核对副本里已执行的笔记本与仓库里的源文件逐单元相同，防止学生版用上旧的执行结果。
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SOLUTION_TAG = "solution"
# 围栏指令块：行首 3 个以上 ` 或 :，接 {solution}，到同样的围栏为止（MyST 要求闭合围栏不短于开头，这里取等长，本书一律如此）
_SOLUTION_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{solution\}[^\n]*\n.*?^(?P=fence)[ \t]*(?:\n|\Z)", flags=re.S | re.M)
_EXERCISE = re.compile(r"^(`{3,}|:{3,})\{exercise(?:-start)?\}", flags=re.M)
_GATE_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}", flags=re.M)
_GATE_END_BLOCK = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution-end\}[^\n]*\n(?:.*?\n)??(?P=fence)[ \t]*(?:\n|\Z)",
                             flags=re.S | re.M)
_ANY_SOLUTION = re.compile(r"^(`{3,}|:{3,})\{solution", flags=re.M)   # {solution}、{solution-start}、{solution-end}


class StudentEditionError(ValueError):
    """删除解答时发现的问题；消息是一行中文，带英文关键词。"""


def strip_markdown(text: str) -> tuple[str, int]:
    """删掉 Markdown 文本里的 {solution} 指令块，返回（新文本，删掉的块数）。多余的空行合并成一个。"""
    new, count = _SOLUTION_BLOCK.subn("", text)
    if count:
        new = re.sub(r"\n{3,}", "\n\n", new)
    return new, count


def count_exercises(text: str) -> int:
    return len(_EXERCISE.findall(text))


def is_solution_cell(cell: dict) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _strip_gated(text: str, gated: bool) -> tuple[str, bool, int]:
    """从一个 Markdown 单元里删掉 {solution-start} … {solution-end} 之间的文字（可跨单元）。

    返回（留下的文字，单元末尾是否仍在解答里，遇到的 solution-start 个数）。
    """
    kept, pos, starts = [], 0, 0
    while pos <= len(text):
        if not gated:
            m = _GATE_START.search(text, pos)
            if m is None:
                kept.append(text[pos:])
                break
            kept.append(text[pos:m.start()])
            pos, gated, starts = m.start(), True, starts + 1
        m = _GATE_END_BLOCK.search(text, pos)
        if m is None:
            break
        pos, gated = m.end(), False
    return "".join(kept), gated, starts


def strip_notebook(nb: dict) -> tuple[dict, int]:
    """删掉解答单元和 Markdown 单元里的解答；返回（笔记本，删掉的解答数）。

    解答 = 带 solution 标签的单元、Markdown 里的 {solution} 块，以及 {solution-start} 与 {solution-end}
    之间（含两端）的一切；后者为标签漏打时兜底，书里的约定仍是打标签（tests/test_exercises_markup.py 检查）。
    """
    cells, removed, gated = [], 0, False
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] != "markdown":
            if not (gated or is_solution_cell(cell)):
                cells.append(cell)
            continue
        if is_solution_cell(cell) and not gated and not _GATE_START.search(src):
            continue   # 带标签、但不在 start/end 之间的单元（例如解答的第二个代码单元前的说明）
        kept, gated, starts = _strip_gated(src, gated)
        kept, count = strip_markdown(kept)
        removed += starts + count
        if kept.strip() and not is_solution_cell(cell):
            cells.append({**cell, "source": kept.strip("\n").splitlines(keepends=True)} if kept != src else cell)
        elif kept.strip() and count_exercises(kept):
            raise StudentEditionError("带 solution 标签的单元里有练习（exercise in a solution cell）：把练习放进单独的单元")
    if gated:
        raise StudentEditionError("笔记本里有 {solution-start} 却没有对应的 {solution-end}（unclosed gated solution）")
    return {**nb, "cells": cells}, removed


def _source_text(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def check_fresh(stage: Path, repo: Path) -> None:
    """副本里每个笔记本的单元源码都要与仓库相同（输出可以不同）。"""
    for src in sorted((repo / "notebooks").glob("*.ipynb")):
        staged = stage / "notebooks" / src.name
        if not staged.is_file():
            raise StudentEditionError(f"副本里没有已执行的 {src.name}（executed notebook missing）：请先构建完整版")
        a = [("".join(c["source"]), c["cell_type"]) for c in json.loads(src.read_text(encoding="utf-8"))["cells"]]
        b = [("".join(c["source"]), c["cell_type"]) for c in json.loads(staged.read_text(encoding="utf-8"))["cells"]]
        if a != b:
            raise StudentEditionError(f"副本里的 {src.name} 与仓库不一致（stale executed notebook）：请先重新构建完整版")


def strip_stage(stage: Path) -> dict:
    """就地处理副本里的 book/*.md 与 notebooks/*.ipynb；返回 {文件: 删掉的解答数}。"""
    report = {}
    files = sorted((stage / "book").glob("*.md")) + sorted((stage / "notebooks").glob("*.ipynb"))
    for path in files:
        before = count_exercises(_source_text(path))
        if path.suffix == ".ipynb":
            nb, removed = strip_notebook(json.loads(path.read_text(encoding="utf-8")))
            path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        else:
            text, removed = strip_markdown(path.read_text(encoding="utf-8"))
            path.write_text(text, encoding="utf-8")
        after_text = _source_text(path)
        if _ANY_SOLUTION.search(after_text):
            raise StudentEditionError(f"{path.name} 里还有解答（solution left）：笔记本的 solution-start/end 单元"
                                      f"与中间的代码单元都要打 “{SOLUTION_TAG}” 标签")
        if count_exercises(after_text) != before:
            raise StudentEditionError(f"{path.name} 删解答时少了练习（exercise removed）：练习不能和解答放在同一个带标签的单元里")
        if removed:
            report[path.name] = removed
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="学生版：从构建副本里删掉全部解答")
    parser.add_argument("stage", type=Path, help="构建副本目录（含 book/ 与 notebooks/）")
    parser.add_argument("--fresh-from", type=Path, help="先核对副本里的笔记本与这个仓库里的源文件相同")
    parser.add_argument("--check-only", action="store_true", help="只做 --fresh-from 的核对，不删任何东西")
    args = parser.parse_args(argv)
    try:
        if args.fresh_from:
            check_fresh(args.stage, args.fresh_from)
        if args.check_only:
            return 0
        report = strip_stage(args.stage)
    except StudentEditionError as err:
        print(f"[student_edition] 错误：{err}", file=sys.stderr)
        return 1
    total = sum(report.values())
    print(f"[student_edition] 删掉 {total} 个解答：" + "，".join(f"{k} {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""仓库里的笔记本必须以“清空输出”的状态提交（输出只在构建时生成），且第一段代码是统一的开场。"""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _notebooks():
    folder = ROOT / "notebooks"
    assert folder.is_dir(), f"应有目录 {folder}"
    return sorted(folder.glob("*.ipynb"))


def _dirty_cells(nb: dict) -> list[int]:
    return [
        i for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def test_dirty_cell_detector():
    """反面对照：带输出的单元能被识别出来。"""
    nb = {"cells": [
        {"cell_type": "markdown", "source": "x"},
        {"cell_type": "code", "outputs": [], "execution_count": None},
        {"cell_type": "code", "outputs": [{"output_type": "stream"}], "execution_count": 3},
    ]}
    assert _dirty_cells(nb) == [2]


def test_notebooks_are_stored_without_outputs():
    problems = []
    for path in _notebooks():
        dirty = _dirty_cells(json.loads(path.read_text(encoding="utf-8")))
        if dirty:
            problems.append(f"{path.name}: 第 {dirty} 个单元格带有输出或执行计数")
    assert not problems, (
        "笔记本应以清空输出的状态提交（jupyter nbconvert --clear-output --inplace notebooks/X.ipynb）：\n"
        + "\n".join(problems)
    )


def test_notebooks_start_with_setup():
    problems = []
    for path in _notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        first = "".join(code[0]["source"]) if code else ""
        if "import clipedu" not in first or "setup_notebook(" not in first:
            problems.append(f"{path.name}: 第一个代码单元是 {first[:60]!r}")
    assert not problems, (
        "每个笔记本的第一个代码单元应为 `import clipedu; device = clipedu.setup_notebook()`：\n"
        + "\n".join(problems)
    )

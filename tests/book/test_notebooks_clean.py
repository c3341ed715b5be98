"""仓库里的笔记本必须以“清空输出”的状态提交（输出只在构建时生成），且第一段代码是统一的开场。"""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _notebooks():
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


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


def test_glyph_warning_checker(tmp_path):
    """build_book.sh 用 scripts/check_notebook_outputs.py 拦下带“缺字形”警告的笔记本输出。"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_outputs", ROOT / "scripts" / "check_notebook_outputs.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    warning = ("/x/IPython/core/pylabtools.py:170: UserWarning: Glyph 25439 "
               "(\\N{CJK UNIFIED IDEOGRAPH-635F}) missing from font(s) DejaVu Sans.\n")
    bad = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr", "text": warning}]}]}
    good = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": "损失 0.1\n"}]}]}
    (tmp_path / "bad.ipynb").write_text(json.dumps(bad), encoding="utf-8")
    (tmp_path / "good.ipynb").write_text(json.dumps(good), encoding="utf-8")
    assert check.main([str(tmp_path / "good.ipynb")]) == 0
    assert check.main([str(tmp_path / "good.ipynb"), str(tmp_path / "bad.ipynb")]) == 1


def test_transparent_figure_checker_and_extract(tmp_path):
    """透明背景的图被拦下（深色模式下黑字看不见）；不透明的图通过，并被写进 --extract 目录。"""
    import base64
    import importlib.util
    import io

    from PIL import Image

    spec = importlib.util.spec_from_file_location("check_outputs", ROOT / "scripts" / "check_notebook_outputs.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)

    def nb_with(color):
        buf = io.BytesIO()
        Image.new("RGBA", (8, 8), color).save(buf, format="PNG")
        out = {"output_type": "display_data", "data": {"image/png": base64.b64encode(buf.getvalue()).decode()}}
        return {"cells": [{"cell_type": "code", "outputs": [out]}]}

    (tmp_path / "opaque.ipynb").write_text(json.dumps(nb_with((255, 255, 255, 255))), encoding="utf-8")
    (tmp_path / "clear.ipynb").write_text(json.dumps(nb_with((0, 0, 0, 0))), encoding="utf-8")
    figs = tmp_path / "figs"
    assert check.main(["--extract", str(figs), str(tmp_path / "opaque.ipynb")]) == 0
    assert [p.name for p in figs.iterdir()] == ["opaque__cell00_0.png"]
    assert check.main([str(tmp_path / "clear.ipynb")]) == 1


def test_cell_sources_are_one_line_per_element():
    """单元格源码按行存（每个元素恰好一行），git diff 才是逐行的，宽度检查也按行量。"""
    problems = []
    for path in _notebooks():
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            src = cell["source"] if isinstance(cell["source"], list) else [cell["source"]]
            if any("\n" in line[:-1] for line in src):
                problems.append(f"{path.name} 第 {i} 个单元格")
    assert not problems, "这些单元格的源码里有一个元素包含多行：\n" + "\n".join(problems)


_TEMP_LEAKS = ("mkdtemp(", "mkstemp(", "delete=False", "tempfile.tempdir")


def _code(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_notebook_outputs_go_to_their_own_run_dir():
    """笔记本不在临时目录里留文件（没人删，每运行一次多占一份）；写文件的笔记本用 clipedu.run_dir("自己的名字")。"""
    import re

    problems = []
    for path in _notebooks():
        code = _code(path)
        problems += [f"{path.name}: 用了 {bad}" for bad in _TEMP_LEAKS if bad in code]
        names = re.findall(r"clipedu\.run_dir\(\s*[\"']([^\"']+)[\"']", code)
        if any(name != path.stem for name in names):
            problems.append(f"{path.name}: run_dir 的名字 {names} 应为 {path.stem!r}")
        writes = re.search(r"\b(train|train_cached)\(|\"--out\"|out_dir\s*=", code)
        if writes and not names:
            problems.append(f"{path.name}: 写训练输出（{writes.group(0)}）却没有用 clipedu.run_dir")
    assert not problems, "\n".join(problems)


def test_leftover_checker(tmp_path):
    """build_book.sh 执行完笔记本后用 scripts/check_leftovers.py 检查：临时目录必须是空的，每个笔记本一个运行目录。"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_leftovers", ROOT / "scripts" / "check_leftovers.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    tmp, runs = tmp_path / "tmp", tmp_path / "runs"
    (runs / "05_results" / "20261206-000000-1").mkdir(parents=True)
    (runs / "05_results" / "20261206-000000-1" / "last.pt").write_bytes(b"z" * 2048)
    (tmp / "torchinductor_root" / "sub").mkdir(parents=True)  # 工具顺手建的空目录：不算残留
    (tmp / ".ses").write_text("1\n", encoding="utf-8")  # onnxruntime 的固定名文件：不会越积越多
    assert check.main([str(tmp), str(runs)]) == 0
    (tmp / "clipedu_results_abc").mkdir()
    (tmp / "clipedu_results_abc" / "last.pt").write_bytes(b"")
    assert check.main([str(tmp), str(runs)]) == 1
    (tmp / "clipedu_results_abc" / "last.pt").unlink()
    (tmp / "stray.txt").write_text("x", encoding="utf-8")
    assert check.main([str(tmp), str(runs)]) == 1
    (tmp / "stray.txt").unlink()
    (runs / "05_results" / "20261206-000001-2").mkdir()
    assert check.main([str(tmp), str(runs)]) == 1
    assert check.main([str(tmp)]) == 0  # 只查临时目录（单元测试之后）
    assert check.main([]) == 2

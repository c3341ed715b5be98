"""benchmarks/notebook_timing.py：覆盖全部笔记本、按书中顺序，失败的笔记本如实报告。"""
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import notebook_timing  # noqa: E402


def test_book_order_lists_every_notebook_once_in_toc_order():
    order = notebook_timing.book_order()
    assert sorted(order) == sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(set(order)) == len(order)
    # 共用的 CLIP 由 02_pretrain_transfer 先训练：它必须排在用到同一模型的笔记本前面
    names = [p.stem for p in order]
    assert names.index("02_pretrain_transfer") < names.index("02_fusion") < names.index("02_diffusion")


@pytest.mark.parametrize("source, ok", [("x = 1 + 1\nassert x == 2", True), ("raise ValueError('坏')", False)])
def test_run_notebook_reports_success_and_failure(tmp_path, source, ok):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    wall, success = notebook_timing.run_notebook(path, tmp_path / "cache", threads=1, timeout=120)
    assert success is ok and wall > 0


@pytest.mark.parametrize("threads, seen", [(0, None), (1, "1")])
def test_run_notebook_leaves_thread_choice_to_the_notebook_unless_told(tmp_path, monkeypatch, threads, seen):
    """--threads 0（默认）像读者那样不设 OMP_NUM_THREADS，由 setup_notebook 按空闲的核决定；
    外面环境里设的值也不带进去。给了线程数就照办。"""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    source = f"import os\nassert os.environ.get('OMP_NUM_THREADS') == {seen!r}, os.environ.get('OMP_NUM_THREADS')"
    path = tmp_path / "t.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), path)
    wall, success = notebook_timing.run_notebook(path, tmp_path / "cache", threads=threads, timeout=120)
    assert success

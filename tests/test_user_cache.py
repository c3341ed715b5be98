"""clipedu 在用户目录下写东西的位置（模型缓存、笔记本运行目录）：环境变量优先，XDG，家目录不可写时退到临时目录。"""
import tempfile
from pathlib import Path

import pytest

import clipedu.user_cache as uc
from clipedu.model_cache import cache_dir
from clipedu.run_dirs import run_dir, runs_root


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for name in ("XDG_CACHE_HOME", "CLIPEDU_CACHE", "CLIPEDU_RUNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(uc, "_warned", set())
    return h


def test_defaults_under_the_home_cache(home):
    assert runs_root() == home / ".cache" / "clipedu" / "runs"
    assert cache_dir() == home / ".cache" / "clipedu" / "models"


def test_environment_variables_win(home, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPEDU_RUNS", "~/my_runs")
    monkeypatch.setenv("CLIPEDU_CACHE", str(tmp_path / "models"))
    assert runs_root() == home / "my_runs" and cache_dir() == tmp_path / "models"


def test_xdg_cache_home_absolute_only(home, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runs_root() == tmp_path / "xdg" / "clipedu" / "runs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # 规范说相对路径无效
    assert runs_root() == home / ".cache" / "clipedu" / "runs"


def test_unwritable_home_falls_back_to_temp(tmp_path, monkeypatch, capsys):
    """家目录不可写（这里用“家目录是个文件”模拟：以 root 运行时权限位挡不住 root）：退到临时目录，提示一次。"""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("HOME", str(blocker))
    for name in ("XDG_CACHE_HOME", "CLIPEDU_CACHE", "CLIPEDU_RUNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(uc, "_warned", set())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = run_dir("05_results")  # 笔记本照样能跑
    assert path.is_dir() and Path(tmp_path / "tmp") in path.parents
    assert run_dir("05_results").parent == path.parent
    err = capsys.readouterr().err
    assert err.count("不可写") == 1 and "CLIPEDU_RUNS" in err
    assert cache_dir().parent == path.parent.parent.parent  # models 与 runs 在同一个 clipedu-<uid> 之下

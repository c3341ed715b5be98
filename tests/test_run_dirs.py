"""clipedu.run_dir：笔记本的输出目录，同名下只留最近一次运行；别的进程正在用的、不是本库建的都不碰。"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clipedu
from clipedu.errors import UsageError
from clipedu.outdir import check_out_dir_unused, run_files
from clipedu.run_dirs import MARKER, previous_runs, run_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("CLIPEDU_RUNS", str(root))
    return root


def _child(code: str, runs: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "CLIPEDU_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, **kw)


_MAKE = "import clipedu; p = clipedu.run_dir('nb'); (p / 'big.bin').write_bytes(b'x' * 100_000); print(p, flush=True)"


def test_fresh_empty_dir_under_the_root(runs):
    path = run_dir("05_results")
    assert path.parent == runs / "05_results" and path.is_dir()
    assert run_files(path) == []  # 标记文件不算内容：新训练不会被“目录非空”拦下
    check_out_dir_unused(path, resume=None, overwrite=False)
    info = json.loads((path / MARKER).read_text(encoding="utf-8"))
    assert info["pid"] == os.getpid()
    assert clipedu.TrainConfig(out_dir=path).out_dir == str(path)  # TrainConfig 接受 Path


def test_running_twice_in_sequence_keeps_one_run(runs):
    """一个笔记本反复运行（每次一个新内核）：磁盘上始终只有最近一次。"""
    firsts = []
    for _ in range(3):
        out, _ = _child(_MAKE, runs).communicate(timeout=120)
        firsts.append(Path(out.strip()))
    left = previous_runs("nb")
    assert left == [firsts[-1]] and (firsts[-1] / "big.bin").stat().st_size == 100_000
    assert not firsts[0].exists() and not firsts[1].exists()


def test_same_process_replaces_its_previous_run(runs):
    a = run_dir("nb")
    (a / "old.txt").write_text("旧", encoding="utf-8")
    b = run_dir("nb")
    assert previous_runs("nb") == [b] and not (b / "old.txt").exists()


def test_live_owner_is_left_alone_and_dead_one_removed(runs):
    holder = _child(_MAKE + "; import sys; sys.stdin.read()", runs, stdin=subprocess.PIPE)
    try:
        theirs = Path(holder.stdout.readline().strip())
        mine = run_dir("nb")
        assert sorted(previous_runs("nb")) == sorted([theirs, mine])  # 另一个仍在运行的内核：不动
        assert (theirs / "big.bin").exists()
    finally:
        holder.communicate("", timeout=60)
    newest = run_dir("nb")
    assert previous_runs("nb") == [newest]  # 它结束之后，连同本进程先前那个一起删掉


def _fake_run(base: Path, name: str, info) -> Path:
    d = base / name
    d.mkdir(parents=True)
    (d / MARKER).write_text(info if isinstance(info, str) else json.dumps(info), encoding="utf-8")
    (d / "data.bin").write_bytes(b"y" * 10)
    return d


def test_which_old_runs_are_removed(runs):
    import socket

    base = runs / "nb"
    host = socket.gethostname()
    reused = _fake_run(base, "a-reused-pid", {"pid": 1, "host": host, "start": "no-such-start"})  # pid 被复用
    gone = _fake_run(base, "b-dead", {"pid": 2**22 + 12345, "host": host, "start": None})
    other_host = _fake_run(base, "c-other-host", {"pid": 2**22 + 12345, "host": host + "-x", "start": None})
    fresh_broken = _fake_run(base, "d-broken-fresh", "{not json")
    old_broken = _fake_run(base, "e-broken-old", "{not json")
    os.utime(old_broken, (time.time() - 3600, time.time() - 3600))
    foreign = base / "f-not-ours"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("用户自己的文件", encoding="utf-8")
    (base / "notes.txt").write_text("也不动", encoding="utf-8")

    mine = run_dir("nb")
    assert not reused.exists() and not gone.exists() and not old_broken.exists()
    assert other_host.exists() and fresh_broken.exists()  # 判断不了的：不动
    assert (foreign / "keep.txt").exists() and (base / "notes.txt").exists()
    assert mine.exists()


@pytest.mark.parametrize("name", ["", ".hidden", "../up", "a/b", "名字", "x" * 65, None, 5, "-dash"])
def test_bad_names_are_refused(runs, name):
    with pytest.raises(UsageError, match="run_dir"):
        run_dir(name)
    assert not runs.exists() or not any(runs.iterdir())


def test_unusable_root_gets_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("CLIPEDU_RUNS", str(blocker))
    with pytest.raises(UsageError, match="CLIPEDU_RUNS"):
        run_dir("nb")


def test_default_root_is_in_the_user_cache(monkeypatch):
    from clipedu.run_dirs import runs_root

    monkeypatch.delenv("CLIPEDU_RUNS", raising=False)
    assert runs_root() == Path.home() / ".cache" / "clipedu" / "runs"
    monkeypatch.setenv("CLIPEDU_RUNS", "~/elsewhere")
    assert runs_root() == Path.home() / "elsewhere"


def test_liveness_probe_never_signals_on_windows(monkeypatch):
    """Windows 上 os.kill(pid, 0) 会结束那个进程：探测只能用别的办法，判断不了就当作还在（不删）。"""
    import builtins

    import clipedu.outdir as od

    def forbidden(*a):
        raise AssertionError("Windows 上不许用 os.kill 探测进程")

    monkeypatch.setattr(od.os, "name", "nt")
    monkeypatch.setattr(od.os, "kill", forbidden)
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "psutil" else real_import(name, *a, **k))
    assert od._alive(2**22 + 12345, None) is True

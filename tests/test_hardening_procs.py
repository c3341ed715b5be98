"""加固（issue 15）里需要真实进程的情形：两个训练抢同一个 --out、kill -9 之后续训（Ctrl-C 见 test_hardening.py）。"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--batch-size", "4", "--eval-size", "0", "--device", "cpu", "--no-progress", "--warmup-steps", "1"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _start(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "clipedu", *TRAIN, "--out", str(out), *extra], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_training(proc, out: Path, timeout=120):
    """等到它持有锁并至少写了一行日志（训练真的开始了）。"""
    t0 = time.time()
    while time.time() - t0 < timeout:
        log = out / "log.jsonl"
        if (out / ".clipedu.lock").exists() and log.exists() and log.read_text().count("\n") >= 1:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise TimeoutError("训练没有开始")


def _last_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.slow
def test_second_process_gets_a_lock_error_and_kill_9_leaves_a_stale_lock(tmp_path, capsys):
    """第一个训练在子进程里跑；本测试进程就是 “第二个进程”（进程内调用 main，省一次启动）。"""
    from clipedu.cli import main

    out = tmp_path / "run"
    first = _start(out, "--steps", "100000", "--time-budget", "120", "--save-every", "1")
    try:
        _wait_training(first, out)
        assert json.loads((out / ".clipedu.lock").read_text())["pid"] == first.pid
        rc = main([*TRAIN, "--out", str(out), "--resume", "latest", "--steps", "1"])
        line = _last_line(capsys.readouterr().err)
        assert rc == 1 and "output directory is locked" in line and f"pid {first.pid}" in line
        assert first.poll() is None  # 第一个训练不受影响
    finally:
        first.kill()  # kill -9：来不及释放锁
        first.wait()
    assert (out / ".clipedu.lock").exists()
    rc = main([*TRAIN, "--out", str(out), "--resume", "latest", "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 0 and "stale lock" in err and "Traceback" not in err
    assert not (out / ".clipedu.lock").exists()

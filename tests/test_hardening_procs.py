"""加固（issue 15）里需要真实进程的情形：torchrun 任务与第二个训练抢同一个 --out、kill -9 之后续训
（Ctrl-C 见 test_hardening.py）。"""
import json
import os
import signal
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
def test_torchrun_ranks_share_one_lock_a_second_job_is_refused_and_kill_9_leaves_a_stale_lock(tmp_path, capsys):
    """第一个训练是 torchrun 的两个 rank（gloo，CPU）：只有 0 号进程持锁，1 号不因它报错（训练在走，
    每一步都要两个 rank 一起）。本测试进程是同时来的 “第二个训练”（进程内调用 main，省一次启动）：被拒绝。
    然后 kill -9 整个任务：锁留下来，成了陈旧锁，下一次续训宣布并接管它。"""
    import clipedu.trainer  # noqa: F401  先导入：第二个训练的检查要在第一个还在跑时完成
    from clipedu.cli import main

    out = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "clipedu", *TRAIN, "--out", str(out), "--steps", "100000", "--time-budget", "120",
                            "--save-every", "1"], cwd=ROOT, env={**_env(), "TMPDIR": str(tmp_path)}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        _wait_training(job, out)
        holder = json.loads((out / ".clipedu.lock").read_text())["pid"]
        assert holder != job.pid  # 持锁的是 0 号 worker，不是 torchrun 本身
        rc = main([*TRAIN, "--out", str(out), "--resume", "latest", "--steps", "1"])
        line = _last_line(capsys.readouterr().err)
        assert rc == 1 and "output directory is locked" in line and f"pid {holder}" in line
        assert job.poll() is None  # 第一个训练不受影响
    finally:
        workers = _children(job.pid)  # torchrun 把 worker 放在各自的会话里：得逐个 kill
        for pid in [*workers, job.pid]:
            os.kill(pid, signal.SIGKILL)  # kill -9：来不及释放锁
        job.communicate()
    assert holder in workers and (out / ".clipedu.lock").exists()
    for _ in range(100):  # 等 worker 真正消失（它们不是本进程的子进程，没法 wait）
        if not any(_pid_alive(p) for p in workers):
            break
        time.sleep(0.1)
    rc = main([*TRAIN, "--out", str(out), "--resume", "latest", "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 0 and "stale lock" in err and "Traceback" not in err
    assert not (out / ".clipedu.lock").exists()


def _children(pid: int) -> list[int]:
    """Linux：/proc 里记下的直接子进程。"""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

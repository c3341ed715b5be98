"""SIGTERM：训练在步边界保存检查点后停下，退出码 143，续训与不间断的训练逐位相同（clipedu/stop_signal.py）。"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipedu.checkpoint import load_checkpoint
from clipedu.errors import message_for
from clipedu.stop_signal import TrainingStopped, stop_requests

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "_train_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def python_default_handlers():
    """像在终端里那样：SIGINT → KeyboardInterrupt，SIGTERM → 默认（退出）。

    非交互 shell 里的后台进程（例如 CI 脚本启动的 pytest）继承的 SIGINT 是“忽略”，这里先改回来。"""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, h in old.items():
        signal.signal(s, h)


def _terminal_like():
    """子进程的 preexec_fn：SIGINT 恢复默认，Python 启动时才会装上 KeyboardInterrupt。"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_becomes_a_flag_inside_and_the_old_handler_comes_back(sig):
    before = signal.getsignal(sig)
    with stop_requests() as signalled:
        assert signalled() is None
        os.kill(os.getpid(), sig)  # 进程没有退出、没有 KeyboardInterrupt：只记下了信号
        time.sleep(0.01)
        assert signalled() == sig
    assert signal.getsignal(sig) is before


def test_ignored_signals_stay_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with stop_requests() as signalled:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert signalled() is None
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_second_ctrl_c_interrupts_at_once():
    with pytest.raises(KeyboardInterrupt):
        with stop_requests():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # 第二次：按原来的处理方式，立即 KeyboardInterrupt
            time.sleep(1)


def test_message_and_exit_code():
    text, code = message_for(TrainingStopped(signal.SIGTERM, 7, "runs/x/ckpt_step7.pt"))
    assert code == 143 and "第 7 步" in text and "--resume latest" in text and "ckpt_step7.pt" in text


def _wait_for_lines(path: Path, n: int, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} 在 {timeout} 秒内没有写到 {n} 行")


@pytest.mark.slow
def test_sigterm_saves_then_resume_is_bit_identical(tmp_path):
    args = ["--steps", "10", "--batch-size", "8", "--delay", "0.004"]
    ref = subprocess.Popen([sys.executable, WORKER, "--out", str(tmp_path / "ref"), *args], env=ENV)
    victim = subprocess.Popen([sys.executable, WORKER, "--out", str(tmp_path / "cut"), *args], env=ENV,
                              preexec_fn=_terminal_like)
    cut = tmp_path / "cut" / "plain"
    _wait_for_lines(cut / "log.jsonl", 3, victim)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=120) == 143
    metrics = json.loads((cut / "metrics.json").read_text())
    n = metrics["steps"]
    assert metrics["status"] == "stopped" and metrics["stopped_by"] == "SIGTERM" and 3 <= n < 10
    assert (cut / f"ckpt_step{n}.pt").exists() and not (cut / "last.pt").exists()
    assert len((cut / "log.jsonl").read_text().splitlines()) == n  # 日志与检查点停在同一步
    rc = subprocess.run([sys.executable, WORKER, "--out", str(tmp_path / "cut"), *args, "--resume", "latest"],
                        env=ENV, timeout=120).returncode
    assert rc == 0 and ref.wait(timeout=120) == 0
    a = load_checkpoint(tmp_path / "ref" / "plain" / "last.pt")
    b = load_checkpoint(cut / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert b["train_state"]["step"] == 10


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_cli_prints_one_line_and_exits_128_plus_signal(tmp_path, sig, code, name):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "clipedu", "train", "--preset", "tiny-cpu", "--out", str(out),
           "--steps", "100000", "--batch-size", "8", "--eval-size", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_terminal_like)
    _wait_for_lines(out / "log.jsonl", 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and name in lines[0] and "--resume latest" in lines[0], err
    assert "Traceback" not in err
    assert list(out.glob("ckpt_step*.pt"))


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_with_dataloader_workers(tmp_path):
    """调度器把 SIGTERM 发给整个进程组（含 DataLoader worker）：worker 不能先死，训练照样存档后以 143 退出。"""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "clipedu", "train", "--preset", "tiny-cpu", "--out", str(out),
           "--steps", "100000", "--batch-size", "8", "--eval-size", "0", "--no-progress", "--num-workers", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # 自己一个进程组，killpg 不会波及 pytest
    _wait_for_lines(out / "log.jsonl", 3, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    n = json.loads((out / "metrics.json").read_text())["steps"]
    assert (out / f"ckpt_step{n}.pt").exists() and "Traceback" not in err

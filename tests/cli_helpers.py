"""加固测试（test_hardening*.py）共用的小工具：进程内调用命令行、检查 “一行说明”、防卡死。"""
from __future__ import annotations

import signal

import pytest

# 最小的训练命令：tiny-cpu、2 步、批 4、不评估
TRAIN = ["train", "--steps", "2", "--batch-size", "4", "--eval-size", "0", "--device", "cpu", "--no-progress",
         "--warmup-steps", "1"]


@pytest.fixture
def no_hang():
    """超过 60 秒就算失败（“永远不停”变成一个清楚的失败），而不是拖住整个测试集。"""
    def _alarm(signum, frame):
        raise TimeoutError("测试超时：命令没有在时限内结束")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """进程内运行 ``python -m clipedu ARGV``，返回 (退出码, stdout, stderr)；argparse 的 SystemExit 也收下。"""
    from clipedu.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_clear_line(err: str) -> str:
    """stderr 的最后一行是 “错误：……/ english key phrase”，没有调用栈；返回这一行。"""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("错误：") and " / " in last, err
    return last

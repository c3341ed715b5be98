"""SIGTERM 与 Ctrl-C（SIGINT）→ 在下一个步边界保存检查点再停（见第 5 章 sec-code-resume）。

集群调度器（Slurm 的抢占与超时、Kubernetes 删除 Pod）和 ``kill`` 默认都先发 SIGTERM，
过一会儿再发 SIGKILL。Python 对 SIGTERM 的默认处理是立即退出：上一个检查点之后的训练全部白做。
``stop_requests()`` 在训练循环期间把 SIGTERM 与 SIGINT 变成一个标志，循环每步结束时查看它，
保存 ``ckpt_step{N}.pt`` 后抛出 ``TrainingStopped``（命令行退出码 128 + 信号编号：SIGTERM 143，
Ctrl-C 130）。同一个信号来第二次就按原来的方式立即处理（SIGTERM 退出，Ctrl-C 抛 KeyboardInterrupt）：
卡住的进程仍然停得下来。
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
    """训练因信号在步边界停下，检查点已保存；``--resume latest`` 可以接着训练。"""

    def __init__(self, signum: int, step: int, checkpoint: Optional[str]):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        shown = "Ctrl-C（SIGINT）" if signum == signal.SIGINT else name
        where = f"已保存检查点 {checkpoint}" if checkpoint else "检查点由 0 号进程保存"
        super().__init__(f"收到 {shown}，训练在第 {step} 步结束时停下，{where}；"
                         f"用同样的命令加 --resume latest 接着训练 / stopped by {name}")


@contextlib.contextmanager
def stop_requests(signals: tuple = STOP_SIGNALS) -> Iterator[Callable[[], Optional[int]]]:
    """上下文内收到 ``signals`` 之一时只记下它；返回的函数给出收到的信号编号（没有则 None）。

    只能在主线程里安装信号处理函数；在别的线程里（例如 GUI 或服务里调用 train）什么也不改，
    函数永远返回 None。原本被忽略的信号（SIG_IGN，例如非交互 shell 里后台进程的 SIGINT）保持忽略。
    离开上下文时恢复原来的处理函数。
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []
    # 原本被忽略的信号保持忽略；getsignal 返回 None（由 C 代码装的处理函数）时按默认处理恢复
    previous = {s: h if h is not None else signal.SIG_DFL
                for s in signals if (h := signal.getsignal(s)) is not signal.SIG_IGN}

    def handler(signum, frame):
        if received:  # 第二次：恢复原来的处理方式并重发，进程按它退出
            signal.signal(signum, previous[signum])
            os.kill(os.getpid(), signum)
            return
        received.append(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker 的 ``worker_init_fn``：worker 忽略 SIGTERM 与 SIGINT，由主进程决定何时停下。

    调度器（Slurm）与 ``kill -- -PGID`` 常把信号发给整个进程组：worker 若先按默认方式死掉，
    主进程取下一批时就报错退出，来不及在步边界保存。worker 不会因此留下来：主进程退出时会收尾，
    父进程消失时 worker 也会自行退出。"""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


__all__ = ["TrainingStopped", "stop_requests", "ignore_stop_signals", "STOP_SIGNALS"]

"""几个互不相干的小模型同时训练：每个模型一个 Python 线程，每个线程只用 1 个算子内线程（见第 2 章 sec-fusion-lab）。

小模型的一步由几百个小算子组成。PyTorch 默认让几个线程合做**每一个**算子（算子内并行，intra-op），
算子越小，线程之间分活、会合的开销占比越大：实验 2.B 的融合模型一步在 2 个线程上只比 1 个线程快两三成，
远不到 2 倍（benchmarks/results/ch2.md）。
几个模型要训练时，换一种分法更划算：每个核整段地训练一个模型，线程之间几乎不用会合。
PyTorch 的算子在计算时释放 GIL，所以 Python 线程在这里是真的并行；不用多进程，也就不用在进程之间
复制张量或传递 pickle。

每个任务必须只用自己的随机数生成器（例如 ``fit_classifier`` 的 ``seed``），不碰全局的随机状态；
这样结果与逐个在 1 个线程上训练逐位相同，与线程的先后无关（tests/test_parallel_fit.py 核对）。
"""
from __future__ import annotations

import threading
from typing import Callable, Mapping, Optional, TypeVar

import torch

T = TypeVar("T")

MAX_WORKERS = 4  # 任务再多也至多 4 个线程：小算子之间的 Python 开销要抢 GIL，线程太多反而慢


def fit_in_threads(
    jobs: Mapping[str, Callable[[threading.Event], T]], max_workers: Optional[int] = None,
) -> dict[str, T]:
    """同时运行几个训练任务，返回 {名字: 任务的返回值}，顺序与 ``jobs`` 相同。

    每个任务是 ``job(stop) -> 结果``：``stop`` 是一个 ``threading.Event``，任务应在每一步检查它，
    被设置时尽快返回。任一任务出错，或等待时按了中断（KeyboardInterrupt），就设置 ``stop``，
    等其余任务停下再把异常抛出——不会留下在后台继续占用 CPU 的线程。
    运行期间 PyTorch 的算子内线程数设为 1，结束后恢复原值。

    同时运行的线程数是任务数，至多 ``max_workers``（默认 ``MAX_WORKERS``），与原来的算子内线程数无关：
    3 个任务在 2 个核上开 3 个线程，比开 2 个线程、最后一个任务独自跑完更快。想少占 CPU 时把
    ``max_workers`` 设小，``max_workers=1`` 就是逐个在 1 个线程上训练。
    """
    if not jobs:
        return {}
    workers = max(1, min(len(jobs), max_workers or MAX_WORKERS))
    stop = threading.Event()
    todo = iter(list(jobs))  # 各线程从这里轮流领任务
    lock = threading.Lock()
    results: dict[str, T] = {}
    errors: list[BaseException] = []

    def worker() -> None:
        torch.set_num_threads(1)  # 新线程第一次用到 ATen 时按全局设置初始化；这里再明确设一次
        while not stop.is_set():
            with lock:
                name = next(todo, None)
            if name is None:
                return
            try:
                results[name] = jobs[name](stop)
            except BaseException as e:  # 交给主线程抛出；先叫停其余任务
                errors.append(e)
                stop.set()

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    threads: list[threading.Thread] = []
    try:
        for i in range(workers):
            t = threading.Thread(target=worker, name=f"clipedu-fit-{i}", daemon=True)
            threads.append(t)  # 先登记再启动：启动后立刻到来的中断也不会漏掉它
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)  # 短超时：等待中也能及时响应中断
    except BaseException:
        stop.set()  # 包括中断（KeyboardInterrupt）：先叫停，finally 里等线程收工
        raise
    finally:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
        torch.set_num_threads(previous)
    if errors:
        raise errors[0]
    return {name: results[name] for name in jobs}


__all__ = ["fit_in_threads", "MAX_WORKERS"]

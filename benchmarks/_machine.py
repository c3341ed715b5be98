"""基准共用：记下测量时的机器（CPU 型号、指令集、可用核数、负载）与本机实测的 fp32 矩阵乘峰值。

每个结果文件都要说明它来自哪台机器、当时有多忙：同一个脚本在 AMX 的 Intel 与只有 AVX2 的 AMD 上
可差 2 倍以上，在被别的进程占用的机器上又可差几倍。
"""
from __future__ import annotations

import os
import platform
import time

import torch

# 决定 CPU 上矩阵乘速度的指令集
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in _FLAGS if x in have]
    except OSError:
        pass
    return []


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """写进每个结果的机器描述。"""
    return {
        "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "usable_cpus": usable_cpus(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: active spin)"),
        "loadavg": loadavg(), "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def matmul_peak_gflops(n: int = 1024, repeats: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """本机、当前线程数下方阵乘（n×n）的实测 GFLOP/s，取最快一次：作为“峰值”的分母。"""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def matmul_gflops_per_cpu_s(n: int = 1024, repeats: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """同上，但按本进程的 CPU 时间计（``time.process_time``）：机器被别的进程占用时仍然可信。

    它是“每个 CPU 秒最多能做多少 FLOP”；训练步的 FLOP ÷ 它的 CPU 时间，再除以这个数，
    就是不受抢占影响的峰值占比（线程忙等烧掉的 CPU 时间也算在分母里）。
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    c0 = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.process_time() - c0) / 1e9

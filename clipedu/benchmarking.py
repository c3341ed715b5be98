"""基准脚本共用的小工具：记下测量时的机器、实测矩阵乘峰值、把结果写进结果文件。

每个结果都要说明它来自哪台机器、当时有多忙：同一个脚本在带 AMX 的 Intel 与只有
AVX2 的 AMD 上可差 2 倍以上，在被别的进程占用的机器上又可差几倍。
``benchmarks/`` 下的脚本只从本库导入，彼此不互相导入。
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# 决定 CPU 上矩阵乘速度的指令集
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
          "amx_tile", "amx_bf16")


def _cpuinfo_field(key: str) -> str | None:
    """/proc/cpuinfo 里第一个 ``key`` 字段的值；读不到时返回 None。"""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """CPU 型号，例如 “AMD EPYC 7B13”。"""
    return (_cpuinfo_field("model name") or platform.processor()
            or platform.machine() or "unknown CPU")


def cpu_flags() -> list[str]:
    """本机具备的、与矩阵乘速度有关的指令集（见 ``_FLAGS``）。"""
    have = set((_cpuinfo_field("flags") or "").split())
    return [x for x in _FLAGS if x in have]


def _usable_cpu_set() -> set[int]:
    """本进程可以用的 CPU 编号（亲和性设置；不支持的系统上是全部 CPU）。"""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """本进程可用的 CPU 核数（考虑亲和性设置）。"""
    return len(_usable_cpu_set())


def _cpu_busy_seconds(cpus: set[int]) -> float | None:
    """/proc/stat 里这些 CPU 累计的非空闲时间（秒）；读不到（非 Linux）时返回 None。"""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.readlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total, seen = 0, 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        # user nice system idle iowait irq softirq steal …：去掉 idle 与 iowait
        values = [int(x) for x in fields[:8]]
        total += sum(values) - values[3] - values[4]
        seen += 1
    return total / ticks if seen else None


def _clocks() -> tuple[float, float]:
    """(本进程用掉的 CPU 秒, 墙钟秒)。"""
    return time.process_time(), time.perf_counter()


def other_busy_cpus(seconds: float = 0.3) -> float | None:
    """过去 ``seconds`` 秒里，**别的进程**平均占满了本进程可用的 CPU 中的几个核。

    读两次 /proc/stat（只算亲和性允许的那些 CPU），减去本进程自己用掉的 CPU 时间。
    一个 ``while True`` 的忙进程约为 1.0；读不到 /proc/stat 时返回 None。
    """
    cpus = _usable_cpu_set()
    busy0 = _cpu_busy_seconds(cpus)
    if busy0 is None:
        return None
    own0, wall0 = _clocks()
    time.sleep(seconds)
    busy1, (own1, wall1) = _cpu_busy_seconds(cpus), _clocks()
    if busy1 is None:
        return None
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / (wall1 - wall0))


def loadavg() -> list[float] | None:
    """1、5、15 分钟平均负载；不支持的系统上返回 None。"""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """写进每个结果的机器描述：CPU 型号与指令集、核数、torch 版本与线程数、负载。"""
    return {
        "cpu_model": cpu_name(), "cpu_flags": cpu_flags(), "usable_cpus": usable_cpus(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "omp_wait": ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")),
        "loadavg": loadavg(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


@contextlib.contextmanager
def busy_processes(n: int):
    """模拟繁忙机器：起 n 个 ``while True`` 的 Python 进程（nice 0），离开时只停掉这些进程。"""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def describe_cpu(machine: dict) -> str:
    """结果文件里的一行机器描述：型号（指令集），可用核数。``machine`` 是 ``machine_info()`` 的返回值。"""
    return f"{machine['cpu_model']}（{', '.join(machine['cpu_flags'])}），{machine['usable_cpus']} 核"


def git_head(root: Path) -> str:
    """仓库当前提交的短哈希（结果文件里注明测的是哪个提交）。"""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()


def device_name(device: torch.device) -> str:
    """结果标题里的设备名：GPU 型号，或 “CPU × 线程数”。"""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU × {torch.get_num_threads()} 线程"


def rss_mb(pid: int | None = None) -> float:
    """进程（默认本进程）的常驻内存（MB），读 /proc。"""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _square_operands(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """两个 n×n 随机方阵，先乘两次预热。"""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    return a, b


def matmul_peak_gflops(n: int = 1024, repeats: int = 8,
                       dtype: torch.dtype = torch.float32) -> float:
    """本机、当前线程数下方阵乘（n×n）的实测 GFLOP/s，取最快一次：作为“峰值”的分母。"""
    a, b = _square_operands(n, dtype)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def matmul_gflops_per_cpu_s(n: int = 1024, repeats: int = 8,
                            dtype: torch.dtype = torch.float32) -> float:
    """同上，但按本进程的 CPU 时间计（``time.process_time``）：机器繁忙时仍然可信。

    它是“每个 CPU 秒最多能做多少 FLOP”；训练步的 FLOP ÷ 它的 CPU 时间，再除以这个数，
    就是不受抢占影响的峰值占比（线程忙等烧掉的 CPU 时间也算在分母里）。
    """
    a, b = _square_operands(n, dtype)
    c0 = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.process_time() - c0) / 1e9


def write_section(path: Path, name: str, text: str, title: str = "基准结果") -> None:
    """把结果文件里 ``<!-- name:start -->`` 与 ``<!-- name:end -->`` 之间换成 text。

    文件里还没有这一节时追加到末尾；文件不存在时先写一行标题 ``# title``。
    """
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n"
    block = f"{start}\n{text.strip()}\n{end}"
    if start in body:
        pattern = re.escape(start) + ".*?" + re.escape(end)
        body = re.sub(pattern, lambda _: block, body, flags=re.S)
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


def train_shapes_clip(steps: int, seed: int, device: torch.device, **config):
    """在几何图形世界上训练一个 tiny-cpu CLIP（在临时目录里训练，读回模型后删掉）。

    ``config`` 里的其他 ``TrainConfig`` 字段（如 ``warmup_steps``）原样传入。
    返回 (模型, 分词器, 训练秒数)。
    """
    import clipedu

    with tempfile.TemporaryDirectory(prefix="shapes_clip_") as out:  # 读回模型之后就删掉
        t0 = time.perf_counter()
        clipedu.train(clipedu.TrainConfig(preset="tiny-cpu", steps=steps, out_dir=out,
                                          eval_size=300, progress=False, device=str(device),
                                          seed=seed, **config))
        seconds = time.perf_counter() - t0
        model, tok = clipedu.load_model(f"{out}/last.pt", device=device)
    return model, tok, seconds

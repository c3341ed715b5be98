"""命令行旗标的取值检查（argparse 的 ``type=``），所有子命令共用一份（见第 5 章 sec-code-cli）。

每个数值旗标都有上下限：不只拒绝 0 与负数，也拒绝大到会吃光内存、线程或永远睡下去的值
（``--eval-size 1000000000``、``--threads 1000000``、``--throttle inf``）。出错时 argparse
把说明印成一行 “argument --flag: …”，退出码 2。

这个模块只依赖标准库（``config`` 在用到时才导入），``cli``、``config``、``data.shard``、``search.cli``
都能导入它而不成环，也不会让只需 onnxruntime 的 ``serve`` 导入 torch。
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Optional

# 数值上限：再大不是笔误就是会吃光内存、进程或算力的值，早早拒绝比跑到一半崩溃好。
# TrainConfig.validate 用同一组数（config.py 从这里导入），命令行与 API 的规则一致
MAX_BATCH_SIZE = 2**20      # 全局批；最大的公开对比学习实验（SigLIP）用到约 100 万
MAX_EVAL_SIZE = 100_000     # 评估样本数：特征与检索都在内存里，10 万已远超统计上需要的量
MAX_NUM_WORKERS = 64        # 每个进程的 DataLoader 进程数
MAX_SEED = 2**32 - 1        # numpy、torch 都接受的种子范围
MAX_LR = 10.0               # 学习率与权重衰减：AdamW 里更大的值只会让参数溢出
MAX_LR_MULT = 1000.0        # 学习率倍数


def int_in(low: int, high: Optional[int] = None):
    """``[low, high]`` 内的整数（high 为 None 时不设上限）。"""
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            want = f"[{low}, {high}] 内的整数" if high is not None else f"≥ {low} 的整数"
            raise argparse.ArgumentTypeError(f"应为 {want}，实际为 {text!r}")
        return value
    parse.__name__ = "int"  # argparse 的报错里显示 “invalid int value”
    return parse


def float_in(low: float = -math.inf, high: float = math.inf, low_open: bool = False):
    """有限实数，且在 ``[low, high]`` 内（``low_open`` 时不含 low）；nan、inf 一律拒绝。"""
    def parse(text: str) -> float:
        value = float(text)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
        if not ok:
            left = "(" if low_open else "["
            want = (f"{left}{low:g}, {high:g}] 内的实数" if math.isfinite(low) and math.isfinite(high)
                    else f"{'>' if low_open else '≥'} {low:g} 的有限实数" if math.isfinite(low)
                    else "有限实数")
            raise argparse.ArgumentTypeError(f"应为 {want}，实际为 {text!r}")
        return value
    parse.__name__ = "float"
    return parse


finite_float = float_in()
fraction = float_in(0.0, 1.0)               # --max-bad-fraction
port = int_in(1, 65535)                     # --port
threads = int_in(1, 256)                    # --threads：再多只会建出成千上万个线程


def regular_file(text: str) -> str:
    """文件旗标（检查点、权重）：已存在时必须是普通文件；FIFO、设备会让读取永远阻塞。
    不存在的路径交给载入函数，它的说明更具体。"""
    path = os.path.expanduser(text)
    try:
        os.stat(path)
    except FileNotFoundError:
        return text
    except OSError as e:  # 符号链接环（ELOOP）、路径太长……
        raise argparse.ArgumentTypeError(f"{text} 无法访问（{e.strerror}）") from None
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{text} 不是普通文件（目录、FIFO 或设备）")
    return text


regular_file.__name__ = "file"


def resume(text: str) -> str:
    """``--resume``：``latest`` 或一个检查点文件。"""
    return text if text == "latest" else regular_file(text)


resume.__name__ = "file"


def device(text: str) -> str:
    from .config import parse_device
    try:
        return parse_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def encoding(text: str) -> str:
    from .config import check_encoding
    try:
        return check_encoding(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"未知的文本编码 {text!r}；常用的有 utf-8、gb18030") from None


def separator(text: str) -> str:
    """CSV 分隔符：恰好一个字符；``\\t`` 写成两个字符时也认作制表符。"""
    from .config import check_separator
    try:
        return check_separator(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


__all__ = ["MAX_BATCH_SIZE", "MAX_EVAL_SIZE", "MAX_NUM_WORKERS", "MAX_SEED", "MAX_LR", "MAX_LR_MULT", "int_in", "float_in", "finite_float", "fraction", "port", "threads", "regular_file", "resume",
           "device", "encoding", "separator"]

"""第 5 章的练习检查器：读训练日志、学习率日程（见第 5 章 sec-code-logging、sec-code-optim）。"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

from ..optim import warmup_cosine
from ._checker import CheckFailure, Mistake, check_callable, expect_close, run_checks


def _log_lines(n: int, seed: int) -> list[str]:
    """n 行与 ``log.jsonl`` 同格式的记录（step 从 1 起，loss 单调下降加一点噪声）。"""
    g = torch.Generator().manual_seed(seed)
    lines = []
    for step in range(1, n + 1):
        rec = {"step": step, "loss": round(4.0 / math.sqrt(step) + 0.01 * torch.rand(1, generator=g).item(), 6),
               "lr": 1e-3 * min(1.0, step / 5), "logit_scale": round(14.3 + 0.1 * step, 4),
               "samples_seen": 128 * step}
        lines.append(json.dumps(rec, ensure_ascii=False))
    return lines


def check_log_reader(fn, verbose: bool = True):
    """检查 ``fn(path) -> list[dict]``：读 ``log.jsonl``，每行一个 JSON 对象，按文件顺序返回。
    对应练习 ``ex-ch05-log-reader``。

    训练进程被杀（SIGKILL）时最后一行可能只写了一半；空行也可能出现。两者都应跳过，
    其余记录一条不少（与 ``clipedu.run_log.read_log`` 的约定相同）。
    """
    check_callable(fn, "check_log_reader")

    def case(n, seed, tail: str):
        def run():
            lines = _log_lines(n, seed)
            want = [json.loads(s) for s in lines]
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "log.jsonl"
                path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
                try:
                    got = fn(str(path))
                except json.JSONDecodeError as e:
                    raise CheckFailure(f"解析 JSON 时出错（{e.msg}）：被杀的进程可能留下写了一半的最后一行，"
                                       "空行也不是 JSON；遇到它们应跳过，而不是报错。", "no_skip") from None
            if not isinstance(got, list) or not all(isinstance(r, dict) for r in got):
                raise CheckFailure(f"应返回 dict 的列表（每行一个 dict），实际返回了 {type(got).__name__}", "type")
            if len(got) != len(want):
                raise CheckFailure(f"应读出 {len(want)} 条记录，实际 {len(got)} 条；"
                                   + ("是不是把第一行或最后一条完整记录丢掉了？" if len(got) < len(want)
                                      else "是不是把写了一半的行或空行也算进去了？"), "count")
            if [r.get("step") for r in got] != [r["step"] for r in want]:
                raise CheckFailure("记录的顺序或 step 不对：应按文件中的顺序返回，step 保持整数。", "order")
            expect_close(torch.tensor([r.get("loss", float("nan")) for r in got], dtype=torch.float64),
                         torch.tensor([r["loss"] for r in want], dtype=torch.float64), "loss 列")
        return run

    cases = [("完整的日志：20 行", case(20, 0, "")),
             ("进程被杀：最后一行只写了一半", case(12, 1, '{"step": 13, "loss": 0.9')),
             ("夹着空行与行尾空白", case(7, 2, "\n   \n"))]
    return run_checks("读训练日志 check_log_reader", cases, verbose)


def check_lr_schedule(fn, verbose: bool = True):
    """检查 ``fn(step, warmup_steps, total_steps) -> float``：学习率倍数（乘以峰值学习率即为学习率）。
    对应练习 ``ex-ch05-lr``。

    ``step`` 从 0 起；前 ``warmup_steps`` 步线性预热，第 0 步为 1/warmup、第 warmup−1 步为 1；
    之后按余弦从 1 降到 0，在 total_steps 处为 0，超过之后保持 0（与 ``clipedu.optim.warmup_cosine`` 相同）。
    """
    check_callable(fn, "check_lr_schedule")

    def case(warmup, total):
        def run():
            ref = warmup_cosine(warmup, total)
            steps = list(range(0, total + 3))
            want = torch.tensor([ref(s) for s in steps], dtype=torch.float64)
            w = max(1, warmup)

            mistakes = [
                Mistake("warmup_from_zero", torch.tensor([s / w if s < warmup else ref(s) for s in steps],
                                                         dtype=torch.float64),
                        "预热差了一步：第 0 步应为 1/warmup（(step+1)/warmup），否则第一步的学习率是 0，白白浪费一步。"),
                Mistake("no_clamp", torch.tensor(
                    [ref(s) if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
                     for s in steps], dtype=torch.float64),
                    "超过 total_steps 之后余弦又升回去了：进度要截断在 1（min(1, progress)），之后保持 0。"),
                Mistake("linear_decay", torch.tensor(
                    [ref(s) if s < warmup else max(0.0, 1 - (s - warmup) / max(1, total - warmup)) for s in steps],
                    dtype=torch.float64), "预热之后应按余弦衰减：0.5·(1 + cos(π·progress))，不是线性衰减。"),
                Mistake("cosine_from_zero", torch.tensor(
                    [ref(s) if s < warmup else 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))) for s in steps],
                    dtype=torch.float64), "余弦的进度应从预热结束时算起：progress = (step − warmup)/(total − warmup)。"),
            ]
            got = torch.tensor([float(fn(s, warmup, total)) for s in steps], dtype=torch.float64)
            expect_close(got, want, f"学习率倍数（step 0…{total + 2}）", mistakes, atol=1e-6)
        return run

    cases = [("预热 5 步，共 20 步", case(5, 20)),
             ("预热 50 步，共 600 步（tiny-cpu 的默认）", case(50, 600)),
             ("不预热（warmup=0），共 10 步", case(0, 10))]
    return run_checks("学习率日程 check_lr_schedule", cases, verbose)


__all__ = ["check_log_reader", "check_lr_schedule"]

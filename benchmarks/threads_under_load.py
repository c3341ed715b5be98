"""机器被占用时的训练步：OpenMP 等待策略（忙等 / PASSIVE）× 线程数，每步的墙钟与 CPU 时间。

    python benchmarks/threads_under_load.py                 # 自己起 1 个忙进程（while True），测完即停
    python benchmarks/threads_under_load.py --busy 0        # 空闲对照
    python benchmarks/threads_under_load.py --busy 6 --steps 10

每个设置在独立的子进程里跑（等待策略只在 torch 载入时读取一次），按轮交替，报告各轮中位数。
“每步 CPU 时间”不受别的进程抢占影响：它比“空闲时单线程的 CPU 时间”多出的部分，就是线程在
忙等里烧掉的。issue 16 的目标：一个别的忙进程在场时，笔记本用时 ≤ 空闲时的 2 倍。
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


# 子进程：tiny-cpu、批 128、截掉 [PAD] 尾部列，与训练时的一步相同（前向、损失、反向、AdamW）
CHILD = r"""
import json, os, sys, time
import clipedu
import torch
from clipedu.config import get_preset
from clipedu.data import ShapesDataset
from clipedu.loss import clip_loss
from clipedu.model import CLIP
from clipedu.tokenizer import ChineseTokenizer
steps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = CLIP(get_preset("tiny-cpu"))
tok = ChineseTokenizer(context_length=32)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
images, captions, _ = ShapesDataset("train", size=1024).get_batch(range(128))
tokens = tok.trim_padding(tok(captions, context_length=32))
def step():
    i, t, s = model(images, tokens)
    loss = clip_loss(i, t, s)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
w0, c0 = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
print(json.dumps({"wall_ms": 1000 * (time.perf_counter() - w0) / steps,
                  "cpu_ms": 1000 * (time.process_time() - c0) / steps}))
"""

SETTINGS = [("active", 2), ("passive", 2), ("passive", 1), ("active", 1)]


def run_child(policy: str, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["OMP_WAIT_POLICY"] = policy.upper()  # ACTIVE 与未设置时 libgomp 的默认行为相同：先忙等一阵
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(threads)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=int, default=1, help="本脚本自己起的忙进程数（0：不起）")
    p.add_argument("--steps", type=int, default=15, help="每次计时的步数")
    p.add_argument("--rounds", type=int, default=2, help="交替轮数，取中位数")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from clipedu.benchmarking import busy_processes, machine_info

    with busy_processes(args.busy):  # 只停本脚本起的进程
        machine = machine_info()
        results = {s: [] for s in SETTINGS}
        for r in range(args.rounds):
            for s in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                res = run_child(*s, steps=args.steps)
                res["loadavg"] = machine_info()["loadavg"]
                results[s].append(res)
                print(json.dumps({"policy": s[0], "threads": s[1], **res}), flush=True)
    rows = []
    for (policy, threads), rs in results.items():
        rows.append({"policy": policy, "threads": threads,
                     "wall_ms": statistics.median(x["wall_ms"] for x in rs),
                     "cpu_ms": statistics.median(x["cpu_ms"] for x in rs)})
    print(f"\n忙进程 {args.busy} 个；机器：{machine['cpu_model']}，{machine['usable_cpus']} 核，开始时负载 {machine['loadavg']}")
    print("| 等待策略 | 线程 | 每步墙钟 ms | 每步 CPU ms |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['policy']} | {row['threads']} | {row['wall_ms']:.0f} | {row['cpu_ms']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "busy": args.busy, "rows": rows,
                                               "runs": {f"{k[0]}-{k[1]}": v for k, v in results.items()}},
                                              ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

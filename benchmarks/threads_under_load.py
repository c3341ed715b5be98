"""空闲与繁忙机器上的训练步：OpenMP 等待方式（忙等 / 短暂自旋 / PASSIVE）× 线程数。

    python benchmarks/threads_under_load.py --busy 0          # 空闲机器
    python benchmarks/threads_under_load.py --busy 1          # 自己起 1 个忙进程（while True），测完即停
    python benchmarks/threads_under_load.py --busy 1 --work fusion --rounds 3 --json out.json

三种工作量都是书里真实训练的一步（前向、损失、反向、AdamW）：

- ``clip``：tiny-cpu CLIP、批 64、真实标题截掉 [PAD] 尾部列（第 3、5 章与 tiny_cpu_quality）；
- ``fusion``：早期融合 VQA 模型、批 64（实验 2.B，三个融合模型里最慢的那种小算子负载）；
- ``unet``：16 px 文本条件 UNet、批 64（实验 2.C，卷积为主）。

每个设置在独立的子进程里跑（libgomp 只在载入时读一次等待方式），按轮交替，报告各轮中位数。
“每步 CPU 时间”不受别的进程抢占影响：它比单线程多出的部分，就是线程在自旋里烧掉的。
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import clipedu
import torch
import torch.nn.functional as F
from clipedu.optim import adamw
work, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
if work == "clip":
    from clipedu.config import get_preset
    from clipedu.data import ShapesDataset
    from clipedu.loss import clip_loss
    from clipedu.model import CLIP
    from clipedu.tokenizer import ChineseTokenizer
    model = CLIP(get_preset("tiny-cpu"))
    tok = ChineseTokenizer(context_length=32)
    images, captions, _ = ShapesDataset("train", size=1024).get_batch(range(64))
    tokens = tok.trim_padding(tok(captions, context_length=32))
    loss_fn = lambda: clip_loss(*model(images, tokens))
elif work == "fusion":
    from clipedu.labs.fusion import EarlyFusion
    from clipedu.labs.vqa import ShapesVQADataset
    from clipedu.tokenizer import ChineseTokenizer
    model = EarlyFusion()
    images, questions, answers = ShapesVQADataset("train", size=64, seed=0).get_batch(range(64))
    tokens = ChineseTokenizer()(questions, context_length=16)
    loss_fn = lambda: F.cross_entropy(model(images, tokens), answers)
else:
    from clipedu.labs.diffusion import DiffusionConfig, GaussianDiffusion
    from clipedu.labs.unet import TinyUNet, UNetConfig
    model = TinyUNet(UNetConfig(image_size=16, cond_dim=128))
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100))
    x0, cond, g = torch.rand(64, 3, 16, 16) * 2 - 1, torch.randn(64, 128), torch.Generator().manual_seed(0)
    loss_fn = lambda: diffusion.loss(model, x0, cond, p_uncond=0.1, generator=g)
opt = adamw(model.parameters(), torch.device("cpu"), lr=1e-3, weight_decay=0.0)
def step():
    loss = loss_fn()
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
w0, c0 = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
print(json.dumps({"wall_ms": 1000 * (time.perf_counter() - w0) / steps,
                  "cpu_ms": 1000 * (time.process_time() - c0) / steps}))
"""

# 等待方式 → 子进程的环境变量。"clipedu" 是 import clipedu 在 torch 之前设的默认（见 clipedu/__init__.py）
WAITS = {
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},      # 一直自旋（libgomp：约 5 分钟）
    "clipedu": {},                                 # 由 import clipedu 决定
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},    # 不自旋，立即睡眠
}
SETTINGS = [("active", 2), ("clipedu", 2), ("passive", 2), ("clipedu", 1)]
STEPS = {"clip": 30, "fusion": 60, "unet": 20}


def run_child(work: str, wait: str, threads: int, steps: int) -> dict:
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(WAITS[wait])
    out = subprocess.run([sys.executable, "-c", CHILD, work, str(steps), str(threads)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=int, default=1, help="本脚本自己起的忙进程数（0：不起）")
    p.add_argument("--work", default="clip,fusion,unet", help="逗号分隔：clip、fusion、unet")
    p.add_argument("--steps-scale", type=float, default=1.0, help="每次计时的步数乘以这个系数")
    p.add_argument("--rounds", type=int, default=3, help="交替轮数，取中位数")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    works = [w.strip() for w in args.work.split(",") if w.strip()]
    bad = [w for w in works if w not in STEPS]
    if bad or not works:
        p.error(f"--work 只能取 {', '.join(STEPS)}，实际为 {args.work!r}")
    if args.busy < 0 or args.rounds < 1 or args.steps_scale <= 0:
        p.error("--busy ≥ 0，--rounds ≥ 1，--steps-scale > 0")
    from clipedu.benchmarking import busy_processes, machine_info

    with busy_processes(args.busy):  # 只停本脚本起的进程
        machine = machine_info()
        results = {(w, *s): [] for w in works for s in SETTINGS}
        for r in range(args.rounds):
            for w in works:
                steps = max(1, round(STEPS[w] * args.steps_scale))
                for s in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                    res = run_child(w, *s, steps=steps)
                    res["loadavg"] = machine_info()["loadavg"]
                    results[(w, *s)].append(res)
                    print(json.dumps({"work": w, "wait": s[0], "threads": s[1], **res}), flush=True)
    rows = [{"work": w, "wait": wait, "threads": th,
             "wall_ms": statistics.median(x["wall_ms"] for x in rs),
             "cpu_ms": statistics.median(x["cpu_ms"] for x in rs)}
            for (w, wait, th), rs in results.items()]
    print(f"\n忙进程 {args.busy} 个；机器：{machine['cpu_model']}，{machine['usable_cpus']} 核，开始时负载 {machine['loadavg']}")
    print("| 工作量 | 等待方式 | 线程 | 每步墙钟 ms | 每步 CPU ms |\n|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['work']} | {row['wait']} | {row['threads']} | {row['wall_ms']:.0f} | {row['cpu_ms']:.0f} |")
    if args.json:
        runs = {f"{k[0]}-{k[1]}-{k[2]}": v for k, v in results.items()}
        Path(args.json).write_text(json.dumps({"machine": machine, "busy": args.busy, "waits": WAITS,
                                               "rows": rows, "runs": runs},
                                              ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

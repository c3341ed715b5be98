"""torch.compile 在 2 核 CPU 上值不值得（issue 16）：编译耗时与稳态速度，三种本书会训练的模型。

    python benchmarks/compile_cpu.py            # tiny-cpu CLIP、02_fusion 的早期融合、02_diffusion 的 UNet
    python benchmarks/compile_cpu.py --write    # 结果追加到 benchmarks/results/compile_cpu.md

每种模型各训练两次（不编译、编译），同样的步数、批与种子。报告第一步的用时（编译发生在这里；Inductor 缓存每次从空目录开始）、
跳过前 ``--skip`` 步之后每步用时的中位数，以及总用时。CLIP 不编译时按训练器的默认截掉 [PAD] 列；
编译时训练器保持静态形状（见 trainer.train_one_step），这本身也是编译的代价之一。
"""
from __future__ import annotations

import argparse
import datetime as dt
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# 读者第一次编译时没有 Inductor 的磁盘缓存：用一个空的缓存目录，量到的是冷启动的编译耗时
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _COLD_CACHE = tempfile.mkdtemp(prefix="inductor_cold_")
atexit.register(shutil.rmtree, _COLD_CACHE, ignore_errors=True)  # 每次约 100 MB，量完就删
import clipedu  # noqa: E402,F401  先于 torch：OpenMP 线程等活时只短暂自旋
import torch  # noqa: E402

from clipedu.benchmarking import describe_cpu, git_head, machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "compile_cpu.md"


def _row(name: str, compiled: bool, step_times: list[float], skip: int, unit: str) -> dict:
    steady = statistics.median(step_times[skip:])
    return {"model": name, "compile": compiled, "first_step_s": step_times[0],
            "steady_ms": 1000 * steady, "total_s": sum(step_times), "steps": len(step_times), "unit": unit}


def _step_times(hist: list[dict]) -> list[float]:
    """逐步记录里的累计用时 ``time`` → 每步用时。"""
    return [b["time"] - a["time"] for a, b in zip([{"time": 0.0}] + hist, hist)]


def clip_rows(steps: int, batch: int, skip: int) -> list[dict]:
    from clipedu.config import TrainConfig
    from clipedu.trainer import train

    rows = []
    for compiled in (False, True):
        with tempfile.TemporaryDirectory(prefix="compile_clip_") as out:
            cfg = TrainConfig(preset="tiny-cpu", seed=1, out_dir=out,
                              device="cpu", steps=steps, batch_size=batch, warmup_steps=30, weight_decay=0.3,
                              eval_size=0, progress=False, compile=compiled)
            hist = train(cfg)
        rows.append(_row("tiny-cpu CLIP", compiled, [batch / r["pairs_per_s"] for r in hist], skip,
                         f"批 {batch}"))
    return rows


def fusion_rows(steps: int, skip: int) -> list[dict]:
    from clipedu.labs.fusion import FUSION_MODELS, FusionConfig, fit_classifier, vqa_tensors
    from clipedu.labs.vqa import ShapesVQADataset
    from clipedu.tokenizer import ChineseTokenizer

    ds = ShapesVQADataset("train", size=216 * 20, seed=0)
    Xi, Xt, Y = vqa_tensors(ds, ChineseTokenizer(), context_length=16)
    rows = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = FUSION_MODELS["early"](FusionConfig())
        run = torch.compile(model) if compiled else model
        hist = fit_classifier(run, (Xi, Xt), Y, steps=steps, batch_size=64, lr=2e-3, seed=0)
        rows.append(_row("早期融合（02_fusion）", compiled, _step_times(hist), skip, "批 64"))
    return rows


def unet_rows(steps: int, skip: int) -> list[dict]:
    from clipedu.labs.diffusion import DiffusionConfig, GaussianDiffusion, train_diffusion
    from clipedu.labs.unet import TinyUNet, UNetConfig

    g = torch.Generator().manual_seed(0)
    x0, cond = torch.rand(2048, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2048, 128, generator=g)
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100))
    rows = []
    for compiled in (False, True):
        torch.manual_seed(0)
        unet = TinyUNet(UNetConfig(image_size=16, cond_dim=128))
        run = torch.compile(unet) if compiled else unet
        hist = train_diffusion(run, diffusion, x0, cond, steps=steps, batch_size=64, lr=2e-3, seed=0)
        rows.append(_row("TinyUNet（02_diffusion）", compiled, _step_times(hist), skip, "批 64，16×16"))
    return rows


def markdown(rows: list[dict], machine: dict, threads: int) -> str:
    lines = [f"### {dt.date.today().isoformat()}，提交 `{git_head(ROOT)}`，{threads} 个线程", "",
             f"- 机器：{describe_cpu(machine)}；"
             f"开始时 1 分钟平均负载 {machine['loadavg'][0]:.1f}；torch {machine['torch']}", "",
             "| 模型 | 设置 | 编译 | 第一步/秒 | 稳态每步/毫秒 | 步数 | 总用时/秒 |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['unit']} | {'是' if r['compile'] else '否'} | {r['first_step_s']:.1f} "
                     f"| {r['steady_ms']:.1f} | {r['steps']} | {r['total_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=250, help="每次训练的步数")
    p.add_argument("--skip", type=int, default=50, help="稳态中位数跳过的前几步（编译与预热）")
    p.add_argument("--only", default="clip,fusion,unet", help="逗号分隔：clip, fusion, unet")
    p.add_argument("--write", action="store_true", help="追加到 benchmarks/results/compile_cpu.md")
    args = p.parse_args(argv)
    if args.steps <= args.skip:
        raise SystemExit(f"--steps（{args.steps}）应大于 --skip（{args.skip}） / steps must exceed skip")
    torch.set_num_threads(args.threads)
    machine = machine_info()
    rows: list[dict] = []
    only = set(args.only.split(","))
    if "clip" in only:
        rows += clip_rows(args.steps, 64, args.skip)
    if "fusion" in only:
        rows += fusion_rows(args.steps, args.skip)
    if "unet" in only:
        rows += unet_rows(args.steps, args.skip)
    for r in rows:
        print(json.dumps(r, ensure_ascii=False), flush=True)
    text = markdown(rows, machine, args.threads)
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""几个小模型同时训练（实验 2.B 的三种融合）：逐个 2 线程、逐个 1 线程、每个模型一个线程（fit_classifiers）。

    python benchmarks/fusion_threads.py --steps 200 --repeats 3 --busy 0 1 --write
        # 与笔记本同样的数据、模型与批大小（笔记本每个模型 800 步）；--busy 1 同时开一个 nice 0 的忙进程

报告每种做法墙钟秒数的中位数与范围（--repeats 次）、各模型每步的毫秒数，
并核对“同时训练”与“逐个 1 线程”得到的参数逐位相同。
结果写入 benchmarks/results/ch2.md 的「几个小模型同时训练」一节。
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipedu.benchmarking import (busy_processes, describe_cpu, git_head, machine_info,  # noqa: E402
                                  write_section)
from clipedu.labs.fusion import FUSION_MODELS, FusionConfig, fit_classifier, fit_classifiers, vqa_tensors  # noqa: E402
from clipedu.labs.vqa import ShapesVQADataset  # noqa: E402
from clipedu.tokenizer import ChineseTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ch2.md"
NAMES = ("early", "late", "hybrid")


def _models() -> dict:
    out = {}
    for name in NAMES:
        torch.manual_seed(0)
        out[name] = FUSION_MODELS[name](FusionConfig())
    return out


def run(data, steps: int, threads: int) -> dict:
    """三种做法各训练一遍三个模型，返回墙钟秒数、每步毫秒数与逐位核对的结果。"""
    kw = dict(steps=steps, batch_size=64, lr=2e-3, seed=0)
    out, params = {}, {}
    for mode, n in (("seq2", threads), ("seq1", 1)):
        torch.set_num_threads(n)
        models = _models()
        t0 = time.perf_counter()
        hists = {k: fit_classifier(m, *data, **kw) for k, m in models.items()}
        out[mode] = {"wall": time.perf_counter() - t0,
                     "ms": {k: 1e3 * h[-1]["time"] / len(h) for k, h in hists.items()}}
        params[mode] = models
    torch.set_num_threads(threads)
    models = _models()
    t0 = time.perf_counter()
    hists = fit_classifiers(models, *data, **kw)
    out["threads"] = {"wall": time.perf_counter() - t0,
                      "ms": {k: 1e3 * h[-1]["cpu"] / len(h) for k, h in hists.items()}}
    out["same_bits"] = all(
        torch.equal(a, b)
        for k in NAMES
        for a, b in zip(params["seq1"][k].state_dict().values(), models[k].state_dict().values())
    )
    return out


def _summary(runs: list[dict]) -> dict:
    """几次重复的中位数（墙钟与每步毫秒数）与墙钟的范围。"""
    out = {"same_bits": all(r["same_bits"] for r in runs)}
    for mode in ("seq2", "seq1", "threads"):
        walls = sorted(r[mode]["wall"] for r in runs)
        out[mode] = {
            "wall": statistics.median(walls), "lo": walls[0], "hi": walls[-1],
            "ms": {k: statistics.median(r[mode]["ms"][k] for r in runs) for k in NAMES},
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800, help="每个模型的训练步数（笔记本是 800）")
    p.add_argument("--threads", type=int, default=2, help="逐个训练时的算子内线程数")
    p.add_argument("--busy", type=int, nargs="+", default=[0], help="同时开几个忙进程，可给多个值")
    p.add_argument("--repeats", type=int, default=1, help="每个忙进程数下重复几次，报告中位数与范围")
    p.add_argument("--write", action="store_true", help="写入 benchmarks/results/ch2.md")
    args = p.parse_args()
    if args.steps < 1 or args.threads < 1 or args.repeats < 1 or min(args.busy) < 0:
        raise SystemExit("--steps、--threads、--repeats 至少为 1，--busy 不能为负 / bad arguments")
    tok = ChineseTokenizer()
    ds = ShapesVQADataset("train", size=216 * 20, seed=0)
    Xi, Xt, Y = vqa_tensors(ds, tok, context_length=16)
    data = ((Xi, Xt), Y)
    machine, results = machine_info(), {}
    for busy in args.busy:
        runs = []
        with busy_processes(busy):
            for _ in range(args.repeats):
                r = run(data, args.steps, args.threads)
                runs.append(r)
                print(f"忙进程 {busy}：逐个 {args.threads} 线程 {r['seq2']['wall']:.1f} s，"
                      f"逐个 1 线程 {r['seq1']['wall']:.1f} s，同时训练 {r['threads']['wall']:.1f} s；"
                      f"逐位相同 {r['same_bits']}", flush=True)
        results[busy] = _summary(runs)
    if not all(r["same_bits"] for r in results.values()):
        raise SystemExit("同时训练与逐个 1 线程训练的参数不一致 / results differ")
    if args.write:
        lines = [
            f"### 几个小模型同时训练（{machine['time_utc'][:10]}，提交 `{git_head(ROOT)}`）", "",
            f"- 命令：`python benchmarks/fusion_threads.py --steps {args.steps} --repeats {args.repeats} --busy "
            f"{' '.join(map(str, args.busy))} --write`",
            f"- 机器：{describe_cpu(machine)}；"
            f"测量开始时 1 分钟平均负载 {machine['loadavg'][0] if machine['loadavg'] else '?'}",
            f"- 实验 2.B 的三个融合模型各训练 {args.steps} 步（批 64）。“逐个”是一个接一个地训练，算子内线程数如列名；"
            "“同时”是 `fit_classifiers`：每个模型一个线程，每个线程 1 个算子内线程。"
            "每步毫秒数：逐个训练时是墙钟时间，同时训练时是该模型线程的 CPU 时间。"
            f"每格是 {args.repeats} 次重复的中位数，括号里是最快与最慢。", "",
            f"| 忙进程 | 逐个（{args.threads} 线程） | 逐个（1 线程） | **同时** | 同时 / 逐个 {args.threads} 线程 "
            f"| 每步 ms（早期/晚期/混合）：{args.threads} 线程 → 1 线程 → 同时 | 逐位相同 |",
            "|---:|---:|---:|---:|---:|---|---|",
        ]
        for busy, r in results.items():
            ms = lambda m: "/".join(f"{r[m]['ms'][k]:.0f}" for k in NAMES)  # noqa: E731
            wall = lambda m: f"{r[m]['wall']:.1f} s（{r[m]['lo']:.1f}–{r[m]['hi']:.1f}）"  # noqa: E731
            lines.append(
                f"| {busy} | {wall('seq2')} | {wall('seq1')} | **{wall('threads')}** | "
                f"{r['threads']['wall'] / r['seq2']['wall']:.2f}× | {ms('seq2')} → {ms('seq1')} → {ms('threads')} | "
                f"{'是' if r['same_bits'] else '否'} |")
        write_section(RESULTS, "fusion_threads", "\n".join(lines), title="第 2 章基准结果")
        print(f"已写入 {RESULTS}")


if __name__ == "__main__":
    main()

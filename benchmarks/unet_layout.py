"""实验 2.C 的 UNet 在 CPU 上有多快：卷积的内存布局（NCHW / NHWC）× 上采样的顺序，训练一步与采样一步的用时。

    python benchmarks/unet_layout.py --threads 2 --repeats 7 --write
        # 与 02_diffusion 在 CPU 上相同的 UNet（宽 32，16×16）与批大小：训练批 48，CFG 采样一次前向 144 份（72 张图）

每格是 --repeats 次测量的中位数（括号里是最快与最慢），每次测量是 --steps 步的平均；四种变体轮流测，
机器时快时慢的影响落在每种变体上的机会相同。训练一步包括前向、反向与 AdamW 更新（clipedu.optim.adamw）。
结果写入 benchmarks/results/ch2.md 的「UNet 的内存布局」一节。质量的比较见同一文件里 notebook_budgets 的消融。
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipedu.benchmarking import describe_cpu, git_head, machine_info, write_section  # noqa: E402
from clipedu.labs.diffusion import DiffusionConfig, GaussianDiffusion  # noqa: E402
from clipedu.labs.unet import TinyUNet, UNetConfig  # noqa: E402
from clipedu.optim import adamw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ch2.md"
VARIANTS = {  # 名字 → (channels_last, conv_before_upsample)
    "NCHW，先放大后卷积（2026-12-06 之前）": (False, False),
    "**NHWC，先放大后卷积（现在的默认）**": (True, False),
    "NCHW，先卷积后放大": (False, True),
    "NHWC，先卷积后放大": (True, True),
}


def _unet(channels_last: bool, conv_first: bool) -> TinyUNet:
    torch.manual_seed(0)
    return TinyUNet(UNetConfig(image_size=16, cond_dim=128, channels_last=channels_last,
                               conv_before_upsample=conv_first))


def time_train(net: TinyUNet, steps: int, batch: int) -> float:
    """训练 ``steps`` 步（Min-SNR-5），返回每步毫秒数；先预热 3 步。"""
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=50))
    opt = adamw(net.parameters(), torch.device("cpu"), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    x0, cond = torch.randn(batch, 3, 16, 16, generator=g), torch.randn(batch, 128, generator=g)
    net.train()
    for i in range(3 + steps):
        if i == 3:
            t0 = time.perf_counter()
        loss = diffusion.loss(net, x0, cond, p_uncond=0.1, generator=g, snr_gamma=5.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 1e3 * (time.perf_counter() - t0) / steps


@torch.no_grad()
def time_sample(net: TinyUNet, steps: int) -> float:
    """CFG 采样的一步（72 张图，有条件与无条件拼成一批 144 份），返回每步毫秒数；先预热 3 步。"""
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=50))
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(72, 3, 16, 16, generator=g), torch.randn(72, 128, generator=g)
    net.eval()
    for i in range(3 + steps):
        if i == 3:
            t0 = time.perf_counter()
        x = diffusion.p_sample_step(net, x, 49 - i % 50, cond, guidance_scale=3.0, generator=g)
    return 1e3 * (time.perf_counter() - t0) / steps


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}（{min(values):.0f}–{max(values):.0f}）"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="算子内线程数（笔记本在 2 核上用 2）")
    p.add_argument("--batch", type=int, default=48, help="训练的批大小（02_diffusion 在 CPU 上用 48）")
    p.add_argument("--steps", type=int, default=20, help="每次测量的步数")
    p.add_argument("--repeats", type=int, default=7, help="每种变体测几次")
    p.add_argument("--write", action="store_true", help="写入 benchmarks/results/ch2.md")
    args = p.parse_args(argv)
    for name, value in (("--threads", args.threads), ("--batch", args.batch), ("--steps", args.steps),
                        ("--repeats", args.repeats)):
        if value < 1:
            p.error(f"{name} 至少为 1 / must be at least 1")
    torch.set_num_threads(args.threads)
    info = machine_info()
    nets = {name: _unet(*flags) for name, flags in VARIANTS.items()}
    train = {name: [] for name in VARIANTS}
    sample = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, net in nets.items():  # 轮流测
            train[name].append(time_train(net, args.steps, args.batch))
            sample[name].append(time_sample(net, args.steps))
            print(f"{name}: 训练 {train[name][-1]:.0f} ms/步，采样 {sample[name][-1]:.0f} ms/步", flush=True)
    base = next(iter(VARIANTS))
    lines = [
        f"### UNet 的内存布局与上采样顺序（{info['time_utc'][:10]}，提交 `{git_head(ROOT)}`）", "",
        f"- 命令：`python benchmarks/unet_layout.py --threads {args.threads} --batch {args.batch} "
        f"--steps {args.steps} --repeats {args.repeats} --write`",
        f"- 机器：{describe_cpu(info)}，{args.threads} 个算子内线程；"
        f"测量开始时 1 分钟平均负载 {info['loadavg'][0] if info['loadavg'] else '?'}",
        f"- 02_diffusion 的 UNet（宽 32，16×16）。训练一步：批 {args.batch}，前向 + 反向 + AdamW；采样一步：72 张图的 CFG，"
        f"一次前向 144 份。每格是 {args.repeats} 次测量（各 {args.steps} 步）的中位数，括号里是最快与最慢。", "",
        "| 变体 | 训练 ms/步 | 相对 | 采样 ms/步 | 相对 |", "|---|---:|---:|---:|---:|",
    ]
    for name in VARIANTS:
        rt = statistics.median(train[name]) / statistics.median(train[base])
        rs = statistics.median(sample[name]) / statistics.median(sample[base])
        lines.append(f"| {name} | {_cell(train[name])} | {rt:.2f}× | {_cell(sample[name])} | {rs:.2f}× |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(RESULTS, "unet_layout", table, "第 2 章基准结果")


if __name__ == "__main__":
    main()

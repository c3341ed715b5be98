"""第 2 章扩散基准：CLIP 文本条件的 DDPM 在几何图形世界上生成，CLIP 零样本分类评分，引导强度扫描。

用法（结果写入 benchmarks/results/ch2.md 中本脚本的小节）：
    python benchmarks/ch2_diffusion.py --clip-steps 150 --ddpm-steps 2500 --write

配方默认与 02_diffusion 相同：Min-SNR-γ 加权（γ=5）、参数平均（ρ=0.99），用平均后的参数采样；
``--snr-gamma 0 --ema-decay 0`` 是不加权、不平均的原始 DDPM 配方。
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import clipedu
from clipedu.benchmarking import device_name, train_shapes_clip, write_section
from clipedu.data import ShapesDataset
from clipedu.ema import ModelEMA
from clipedu.labs.diffusion import (DiffusionConfig, GaussianDiffusion, clip_to_pixels, generate_and_classify,
                                    pixels_to_clip, train_diffusion)
from clipedu.labs.unet import TinyUNet, UNetConfig

RESULTS = Path(__file__).parent / "results" / "ch2.md"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip-steps", type=int, default=300)
    p.add_argument("--ddpm-steps", type=int, default=2500)
    p.add_argument("--timesteps", type=int, default=50, help="扩散步数 T（与 02_diffusion 相同）")
    p.add_argument("--per-class", type=int, default=6, help="每个类别生成几张")
    p.add_argument("--scales", default="1,2,3,5", help="引导强度 w，逗号分隔")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="Min-SNR-γ 的 γ；0 表示不加权")
    p.add_argument("--ema-decay", type=float, default=0.99, help="参数平均的衰减率 ρ；0 表示不平均")
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    for name in ("clip_steps", "ddpm_steps", "per_class", "train_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} 至少为 1 / must be at least 1")
    if args.timesteps < 2:
        p.error("--timesteps 至少为 2 / must be at least 2")
    try:
        scales = [float(v) for v in args.scales.split(",")]
    except ValueError:
        p.error(f"--scales 应是逗号分隔的数，实际为 {args.scales!r} / bad --scales")
    if not all(math.isfinite(w) and w >= 0 for w in scales):
        p.error("--scales 的每一项都应是不小于 0 的有限数 / guidance scales must be finite and >= 0")
    if not (math.isfinite(args.snr_gamma) and args.snr_gamma >= 0):
        p.error("--snr-gamma 应是不小于 0 的有限数（0 表示不加权）/ must be finite and >= 0")
    if not 0 <= args.ema_decay < 1:
        p.error("--ema-decay 应在 [0, 1) 内（0 表示不平均）/ must be in [0, 1)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("这台机器没有可用的 CUDA GPU，请用 --device cpu / no CUDA device")
    device = torch.device(args.device)
    clip_model, tok, clip_s = train_shapes_clip(args.clip_steps, args.seed, device)
    clip_model.eval().requires_grad_(False)
    ds = ShapesDataset("train", size=args.train_size, image_size=32, seed=args.seed)
    classifier = clipedu.zero_shot_classifier(clip_model, tok, ds.classnames, clipedu.TEMPLATES, device=device)
    with torch.no_grad():
        text_emb = clip_model.encode_text(tok(ds.classnames).to(device)).float()
    test = ShapesDataset("test", size=1000, image_size=32, seed=args.seed)
    Xte, _, yte = test.get_batch(range(len(test)))
    with torch.no_grad():
        acc = lambda x: ((clip_model.encode_image(x.to(device)).float() @ classifier).argmax(-1).cpu() == yte).float().mean().item()
        real32, real16 = acc(Xte), acc(pixels_to_clip(clip_to_pixels(Xte, size=16)))
    X, _, labels = ds.get_batch(range(len(ds)))
    torch.manual_seed(args.seed)
    unet = TinyUNet(UNetConfig(image_size=16, cond_dim=text_emb.shape[1])).to(device)
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=args.timesteps))
    ema = ModelEMA(unet, args.ema_decay) if args.ema_decay > 0 else None
    hist = train_diffusion(unet, diffusion, clip_to_pixels(X, size=16), text_emb.cpu()[labels], steps=args.ddpm_steps,
                           batch_size=64, lr=2e-3, p_uncond=0.1, snr_gamma=args.snr_gamma or None, ema=ema,
                           seed=args.seed)
    sampler = ema.module if ema is not None else unet
    recipe = (f"Min-SNR-γ 加权（γ={args.snr_gamma:g}）" if args.snr_gamma else "不加权（$L_{\\text{simple}}$）") + "，" + (
        f"参数平均（ρ={args.ema_decay:g}，用平均后的参数采样）" if ema is not None else "不平均参数")
    want = torch.arange(len(ds.classnames)).repeat_interleave(args.per_class)
    held = torch.isin(want, torch.tensor(ds.heldout_classes))
    flags = "" if (args.snr_gamma, args.ema_decay) == (5.0, 0.99) else \
        f" --snr-gamma {args.snr_gamma:g} --ema-decay {args.ema_decay:g}"
    lines = [f"### 文本条件 DDPM（`python benchmarks/ch2_diffusion.py --clip-steps {args.clip_steps} "
             f"--ddpm-steps {args.ddpm_steps}{flags}`，{device_name(device)}）", "",
             f"CLIP 训练 {args.clip_steps} 步（{clip_s:.0f} 秒），真实测试图零样本准确率 {real32:.1%}，"
             f"缩到 16 px 再放大后 {real16:.1%}（生成图评分的参照）。DDPM：16×16、T={args.timesteps}、"
             f"UNet {sum(q.numel() for q in unet.parameters()) / 1e3:.0f}K 参数、批 64、{len(hist)} 步（{hist[-1]['time']:.0f} 秒），"
             f"{recipe}。"
             f"每类生成 {args.per_class} 张，CLIP 判为提示词类别的比例：", "",
             "| 引导强度 w | 见过的组合（30 类） | 留出组合（6 类） | 采样时间/秒 |", "|---|---|---|---|"]
    for w in scales:
        t0 = time.perf_counter()
        _, pred = generate_and_classify(diffusion, sampler, clip_model, classifier, text_emb, want, w, seed=args.seed)
        ok = pred == want
        lines.append(f"| {w:g} | {ok[~held].float().mean().item():.1%} | {ok[held].float().mean().item():.1%} | "
                     f"{time.perf_counter() - t0:.1f} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(RESULTS, f"ch2_diffusion_{device.type}", table, "第 2 章基准结果")


if __name__ == "__main__":
    main()

"""第 2 章两个最慢的笔记本能不能更省：换更小的训练预算，看教学结论还在不在（结果见 benchmarks/results/ch2.md）。

    python benchmarks/notebook_budgets.py diffusion 32,800,64,100,2e-3 16,800,64,100,2e-3
        # 每组：UNet 宽度, 步数, 批大小, 扩散步数 T, 学习率（与 02_diffusion 的 UNet 单元格相同的代码）
    python benchmarks/notebook_budgets.py diffusion 32,600,64,100,2e-3,5,0.99 --seeds 0 1 2
        # 可选的第 6、7 项：Min-SNR-γ 的 γ（0 表示不加权）与参数平均的衰减率 ρ（0 表示不平均）；
        # 给了 ρ 时，同一次训练里未平均与平均后的参数各评估一次
    python benchmarks/notebook_budgets.py diffusion 32,600,64,100,2e-3,5,0.99 --conv-first --contiguous
        # UNet 的两个变体（UNetConfig 的 conv_before_upsample / channels_last）：上采样先卷积再放大；
        # 卷积用 NCHW 布局（2026-12-06 之前的默认）
    python benchmarks/notebook_budgets.py fusion 800,64,2e-3 400,64,3e-3
        # 每组：步数, 批大小, 学习率（与 02_fusion 的训练单元格相同的代码）

单线程；报告训练的进程 CPU 时间（机器繁忙时也可比）与笔记本里的同一组指标。扩散用的 CLIP 经 model_cache 与
02_diffusion 共用（tiny-cpu，150 步，种子 0）；缓存目录由 CLIPEDU_CACHE 决定。
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import clipedu  # noqa: E402
from clipedu.model_cache import train_cached  # noqa: E402


def _groups(values: list[str], types: tuple, required: int | None = None) -> list[tuple]:
    """把 "a,b,c" 形式的参数组转成元组；前 required 项必填，其余可省。"""
    required = len(types) if required is None else required
    out = []
    for v in values:
        parts = v.split(",")
        if not required <= len(parts) <= len(types):
            count = f"{required}" if required == len(types) else f"{required}–{len(types)}"
            raise SystemExit(f"参数组 {v!r} 应有 {count} 项，用逗号分开 / bad group")
        try:
            out.append(tuple(t(p) for t, p in zip(types, parts)))
        except ValueError:
            raise SystemExit(f"参数组 {v!r} 里有不是数字的项 / bad number in group") from None
    return out


def diffusion(groups: list[tuple], seeds: list[int], conv_first: bool = False, channels_last: bool = True) -> None:
    from clipedu.data import ShapesDataset
    from clipedu.ema import ModelEMA
    from clipedu.labs.diffusion import (DiffusionConfig, GaussianDiffusion, clip_to_pixels,
                                        generate_and_classify, train_diffusion)
    from clipedu.labs.unet import TinyUNet, UNetConfig

    with tempfile.TemporaryDirectory(prefix="budget_clip_") as out_dir:
        cfg = clipedu.TrainConfig(preset="tiny-cpu", steps=150, warmup_steps=20, time_budget=600, out_dir=out_dir,
                                  eval_size=300, progress=False, device="cpu")
        train_cached(cfg)
        clip_model, tok = clipedu.load_model(f"{out_dir}/last.pt")
    clip_model.eval().requires_grad_(False)
    shapes = ShapesDataset("train", size=10_000, image_size=32, seed=0)
    classifier = clipedu.zero_shot_classifier(clip_model, tok, shapes.classnames, clipedu.TEMPLATES)
    with torch.no_grad():
        text_emb = clip_model.encode_text(tok(shapes.classnames)).float()
    X, _, labels = shapes.get_batch(range(len(shapes)))
    x0, cond = clip_to_pixels(X, size=16), text_emb[labels]
    want = torch.arange(36).repeat_interleave(2)
    held = torch.isin(want, torch.tensor(shapes.heldout_classes))
    for group, seed in ((g, s) for g in groups for s in seeds):
        base, steps, batch, T, lr, gamma, decay = (*group, 0.0, 0.0)[:7]
        diff = GaussianDiffusion(DiffusionConfig(timesteps=T))
        torch.manual_seed(seed)
        unet = TinyUNet(UNetConfig(image_size=16, cond_dim=text_emb.shape[1], base_channels=base,
                                   groups=8 if base >= 24 else 4, conv_before_upsample=conv_first,
                                   channels_last=channels_last))
        ema = ModelEMA(unet, decay) if decay > 0 else None
        t0 = time.process_time()
        train_diffusion(unet, diff, x0, cond, steps=steps, batch_size=batch, lr=lr, p_uncond=0.1,
                        snr_gamma=gamma or None, ema=ema, seed=seed)
        train_s = time.process_time() - t0
        arch = f"{'先卷积后放大' if conv_first else '先放大后卷积'}，{'NHWC' if channels_last else 'NCHW'}"
        label = (f"{arch}，宽 {base}，{steps} 步，批 {batch}，T={T}，学习率 {lr:g}，γ={gamma:g}，ρ={decay:g}，种子 {seed}："
                 f"训练 {train_s:.0f} CPU 秒")
        for name, net in [("未平均", unet)] + ([("平均后", ema.module)] if ema else []):
            cells = []
            for w in (1.0, 3.0, 5.0):
                _, pred = generate_and_classify(diff, net, clip_model, classifier, text_emb, want, w, seed=0)
                ok = pred == want
                cells.append(f"w={w:g} {ok[~held].float().mean():.1%} / {ok[held].float().mean():.1%}")
            print(f"{label}；{name}：" + "；".join(cells), flush=True)


def fusion(groups: list[tuple]) -> None:
    from clipedu.labs.fusion import FUSION_MODELS, FusionConfig, fit_classifier, predict, vqa_tensors
    from clipedu.labs.vqa import ShapesVQADataset
    from clipedu.tokenizer import ChineseTokenizer

    tok = ChineseTokenizer()
    train_ds = ShapesVQADataset("train", size=216 * 20, seed=0)
    test_ds = ShapesVQADataset("test", size=216 * 5, seed=0)
    Xi, Xt, Y = vqa_tensors(train_ds, tok, context_length=16)
    Ei, Et, EY = vqa_tensors(test_ds, tok, context_length=16)
    for steps, batch, lr in groups:
        cells = []
        for name in ("text-only", "early", "late", "hybrid"):
            torch.manual_seed(0)
            model = FUSION_MODELS[name](FusionConfig())
            t0 = time.process_time()
            fit_classifier(model, (Xi, Xt), Y, steps=steps, batch_size=batch, lr=lr, seed=0)
            acc = (predict(model, (Ei, Et)) == EY).float().mean().item()
            cells.append(f"{name} {acc:.1%}（{time.process_time() - t0:.0f} CPU 秒）")
        print(f"{steps} 步，批 {batch}，学习率 {lr:g}：" + "；".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lab", choices=("diffusion", "fusion"))
    parser.add_argument("groups", nargs="+", help="参数组，见上面的说明")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="扩散：每组训练的种子（默认 0）")
    parser.add_argument("--conv-first", action="store_true",
                        help="扩散：UNet 上采样先卷积再放大（默认先放大再卷积）")
    parser.add_argument("--contiguous", action="store_true", help="扩散：卷积用 NCHW 布局（默认 NHWC）")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.lab == "diffusion":
        diffusion(_groups(args.groups, (int, int, int, int, float, float, float), required=5), args.seeds,
                  conv_first=args.conv_first, channels_last=not args.contiguous)
    else:
        fusion(_groups(args.groups, (int, int, float)))


if __name__ == "__main__":
    main()

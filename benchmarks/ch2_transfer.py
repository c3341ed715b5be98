"""第 2 章迁移基准（实验 2.A）：几何图形上预训练的 CLIP，迁移到概念相通的少标注任务与概念不通的手写数字。

一、几何图形世界的少标注任务（概念相通）：按颜色、形状、大小或位置分类，每类只有 k 个标注，
    比较 clipedu.labs.transfer.METHODS 的四种做法，每个设置跑多个种子，报告均值 ± 标准差。
二、手写数字（概念不通，反例）：零样本、线性探针（每类 10 张 / 全部）、全量微调，预训练对照随机初始化。
三、几何图形的留出组合上的 36 类零样本。

用法（结果写入 benchmarks/results/ch2.md 中本脚本的小节）：
    python benchmarks/ch2_transfer.py --write
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

import clipedu
from clipedu.benchmarking import cpu_name, train_shapes_clip, write_section
from clipedu.data import DigitsDataset, ShapesDataset
from clipedu.labs.transfer import (ATTRIBUTES, METHODS, ImageClassifier, features, few_label_comparison,
                                   linear_probe, shapes_attribute_task)
from clipedu.labs.fusion import fit_classifier, predict

RESULTS = Path(__file__).parent / "results" / "ch2.md"


def pretrain(steps: int, seed: int, device) -> tuple:
    """与笔记本 02_pretrain_transfer 相同的预训练：tiny-cpu、预热 20 步。返回 (模型, 分词器, 秒数)。"""
    return train_shapes_clip(steps, seed, device, warmup_steps=20)


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.1%} ± {statistics.pstdev(xs):.1%}"


def shapes_tables(model, args) -> list[str]:
    lines = []
    for attr in args.attributes:
        X, y, names = shapes_attribute_task(attr, 2 * args.pool, seed=args.seed)
        data = (X[:args.pool], y[:args.pool], X[args.pool:], y[args.pool:])
        lines += ["", f"**{attr}（{len(names)} 类，随机猜测 {1 / len(names):.1%}）**", "",
                  "| 每类标注 | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
        for k in args.shots:
            t0 = time.perf_counter()
            r = few_label_comparison(model, data, k, range(args.seeds), steps=args.ft_steps)
            lines.append(f"| {k} | " + " | ".join(mean_std(r[m]) for m in METHODS) + " |")
            print(attr, k, {m: mean_std(v) for m, v in r.items()}, f"{time.perf_counter() - t0:.0f} 秒", flush=True)
    return lines


def digits_rows(model, tok, args, device) -> dict:
    def tensors(ds):
        xs, _, ys = zip(*[ds[i] for i in range(len(ds))])
        return torch.stack(xs), torch.tensor(ys)

    (Xtr, ytr), (Xte, yte) = tensors(DigitsDataset("train", seed=args.seed)), tensors(DigitsDataset("test", seed=args.seed))
    F_tr, F_te = features(model, Xtr), features(model, Xte)
    clf = clipedu.zero_shot_classifier(model, tok, DigitsDataset.classnames, clipedu.TEMPLATES, device=device).float().cpu()
    r = {"零样本": ((F_te @ clf).argmax(-1) == yte).float().mean().item(),
         "线性探针（每类 10 张）": mean_std([linear_probe(F_tr, ytr, F_te, yte, per_class=10, seed=s)
                                      for s in range(args.seeds)]),
         "线性探针（全部）": linear_probe(F_tr, ytr, F_te, yte)}
    held = ShapesDataset("heldout", size=300, image_size=32, seed=args.seed)
    Xh, _, yh = held.get_batch(range(len(held)))
    clf_h = clipedu.zero_shot_classifier(model, tok, held.classnames, clipedu.TEMPLATES, device=device).float().cpu()
    zero_shot_heldout = ((features(model, Xh) @ clf_h).argmax(-1) == yh).float().mean().item()
    torch.manual_seed(args.seed)
    net = ImageClassifier(copy.deepcopy(model)).to(device)   # 微调副本：留出组合要在没被数字改动的模型上测
    fit_classifier(net, (Xtr,), ytr, steps=args.digits_ft_steps, batch_size=64, lr=5e-4, seed=args.seed, device=device)
    r["全量微调"] = (predict(net, (Xte,)) == yte).float().mean().item()
    r["留出组合零样本（36 类）"] = zero_shot_heldout
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip-steps", type=int, default=150, help="几何图形上的预训练步数（笔记本也是 150）")
    p.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), choices=list(ATTRIBUTES))
    p.add_argument("--shots", nargs="+", type=int, default=[1, 5, 20], help="每类标注数")
    p.add_argument("--seeds", type=int, default=5, help="每个设置跑几个种子")
    p.add_argument("--pool", type=int, default=500, help="可供抽标注的图数；测试集同样大小")
    p.add_argument("--ft-steps", type=int, default=60, help="少标注任务里微调与从头训练的步数")
    p.add_argument("--digits-ft-steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    device = torch.device("cpu")
    model, tok, clip_s = pretrain(args.clip_steps, args.seed, device)
    torch.manual_seed(args.seed)
    scratch = clipedu.create_model("tiny-cpu")
    t0 = time.perf_counter()
    lines = [f"### 实验 2.A 预训练与迁移（`python benchmarks/ch2_transfer.py --seeds {args.seeds} "
             f"--shots {' '.join(map(str, args.shots))}`，{cpu_name()} "
             f"CPU × {torch.get_num_threads()} 线程）", "",
             f"几何图形上预训练 {args.clip_steps} 步（{clip_s:.0f} 秒）。少标注任务：从 {args.pool} 张图里每类抽 k 个标注，"
             f"在另外 {args.pool} 张上测；微调与从头训练都是 {args.ft_steps} 步、批 32、学习率 5e-4；"
             f"每格是 {args.seeds} 个种子的均值 ± 标准差（种子决定抽到的标注与随机初始化）。"]
    lines += shapes_tables(model, args)
    res = {"预训练": digits_rows(model, tok, args, device), "随机初始化": digits_rows(scratch, tok, args, device)}
    lines += ["", f"**手写数字（反例）与留出组合**：数字训练 1258 张、测试 539 张，全量微调 {args.digits_ft_steps} 步、批 64；"
              f"数字随机猜测 10%，留出组合 36 类随机 2.8%。", "",
              "| 迁移方式 | 几何图形预训练 | 随机初始化 |", "|---|---|---|"]
    for m, a in res["预训练"].items():
        b = res["随机初始化"][m]
        lines.append(f"| {m} | {a if isinstance(a, str) else f'{a:.1%}'} | {b if isinstance(b, str) else f'{b:.1%}'} |")
    lines += ["", f"评测部分共 {time.perf_counter() - t0:.0f} 秒。"]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(RESULTS, "ch2_transfer_cpu", table, "第 2 章基准结果")


if __name__ == "__main__":
    main()

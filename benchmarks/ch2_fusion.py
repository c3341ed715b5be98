"""第 2 章融合基准：三种融合 + 只看问题的基线 + 双塔 CLIP，在图形问答上的准确率与查询代价。

用法（结果写入 benchmarks/results/ch2.md 中本脚本的小节）：
    python benchmarks/ch2_fusion.py --steps 1500 --write
与笔记本相同的 CPU 预算：--steps 800 --batch-size 64 --train-blocks 20 --clip-steps 150。
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import clipedu
from clipedu.benchmarking import device_name, write_section
from clipedu.data.shapes import COLORS, SHAPES
from clipedu.labs.vqa import PAIRS, ShapesVQADataset
from clipedu.labs.fusion import FUSION_MODELS, FusionConfig, fit_classifier, num_params, predict, query_cost, vqa_tensors
from clipedu.tokenizer import ChineseTokenizer

RESULTS = Path(__file__).parent / "results" / "ch2.md"
CH2_TITLE = "第 2 章基准结果"


@torch.no_grad()
def clip_yesno(args, device, train_ds, test_ds, Xi, Ei, gallery) -> dict:
    """双塔 CLIP 回答是非题：相似度超过（训练集上选的）阈值即答"是"；并量出建索引与查询的代价。"""
    with tempfile.TemporaryDirectory(prefix="ch2_fusion_clip_") as out, torch.enable_grad():
        clipedu.train(clipedu.TrainConfig(preset="tiny-cpu", max_objects=3, steps=args.clip_steps, out_dir=out,
                                          eval_size=200, progress=False, device=str(device), seed=args.seed))
        model, tok = clipedu.load_model(f"{out}/last.pt", device=device)
    model.eval()
    phrase = {q: f"{COLORS[c]}的{SHAPES[s]}" for q, _, kind, c, s in PAIRS if kind == "yesno"}

    def scores(ds, images):
        idx = [i for i in range(len(ds)) if ds.question_type(i) == "yesno"]
        img = torch.cat([model.encode_image(images[idx][j:j + 1000].to(device)) for j in range(0, len(idx), 1000)])
        txt = model.encode_text(tok([phrase[ds.question(i)] for i in idx]).to(device))
        return (img * txt).sum(-1).cpu(), torch.tensor([ds.answer(i) == 0 for i in idx])

    s_tr, y_tr = scores(train_ds, Xi)
    thr = max(s_tr.sort().values[::20], key=lambda c: ((s_tr > c) == y_tr).float().mean().item())
    s_te, y_te = scores(test_ds, Ei)
    t0 = time.perf_counter()
    index = torch.cat([model.encode_image(gallery[i:i + 1000].to(device)) for i in range(0, len(gallery), 1000)])
    t1 = time.perf_counter()
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        (index @ model.encode_text(tok(["红色的圆形"]).to(device))[0]).cpu()
    t2 = time.perf_counter()
    return {"params": num_params(model), "yesno": ((s_te > thr) == y_te).float().mean().item(),
            "index_seconds": t1 - t0, "query_seconds": t2 - t1, "query_gflops": counter.get_total_flops() / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500, help="每个融合模型的训练步数")
    p.add_argument("--batch-size", type=int, default=128, help="批大小（笔记本在 CPU 上用 800 步 × 64）")
    p.add_argument("--clip-steps", type=int, default=300, help="对照用 CLIP 的训练步数")
    p.add_argument("--train-blocks", type=int, default=40, help="训练集大小 = 216 × 该值（216 = 一个均衡区块）")
    p.add_argument("--gallery", type=int, default=10_000, help="查询代价用的图库大小")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--write", action="store_true", help="把表格写进 benchmarks/results/ch2.md")
    args = p.parse_args()
    device = torch.device(args.device)
    tok = ChineseTokenizer()
    train_ds = ShapesVQADataset("train", size=216 * args.train_blocks, seed=args.seed)
    test_ds = ShapesVQADataset("test", size=216 * 5, seed=args.seed)
    Xi, Xt, Y = vqa_tensors(train_ds, tok)
    Ei, Et, EY = vqa_tensors(test_ds, tok)
    qtype = [test_ds.question_type(i) for i in range(len(test_ds))]
    gallery = Ei.repeat(args.gallery // len(Ei) + 1, 1, 1, 1)[:args.gallery]
    one = tok(["图中有红色的圆形吗？"], 16)
    rows = {}
    for name in ("text-only", "early", "late", "hybrid"):
        torch.manual_seed(args.seed)
        model = FUSION_MODELS[name](FusionConfig()).to(device)
        hist = fit_classifier(model, (Xi, Xt), Y, steps=args.steps, batch_size=args.batch_size, lr=2e-3, seed=args.seed, device=device)
        correct = predict(model, (Ei, Et)) == EY
        yesno = correct[[q == "yesno" for q in qtype]].float().mean().item()
        rows[name] = {"params": num_params(model), "train_seconds": hist[-1]["time"], "acc": correct.float().mean().item(),
                      "yesno": yesno, **query_cost(model, gallery, one, batch_size=1000)}
        print(name, json.dumps(rows[name], ensure_ascii=False), flush=True)
    rows["clip"] = clip_yesno(args, device, train_ds, test_ds, Xi, Ei, gallery)
    print("clip", json.dumps(rows["clip"], ensure_ascii=False), flush=True)
    names = {"text-only": "只看问题", "early": "早期融合", "late": "晚期融合", "hybrid": "混合融合", "clip": "双塔 CLIP（对齐）"}
    lines = [f"### 融合对比（图形问答，`python benchmarks/ch2_fusion.py --steps {args.steps} --batch-size {args.batch_size} --train-blocks {args.train_blocks}`，{device_name(device)}）", "",
             f"训练集 {len(train_ds)} 题、测试集 {len(test_ds)} 题；只看问题的理论随机水平 {test_ds.blind_chance:.1%}；"
             f"查询 = 1 个问题 × {args.gallery} 张图（索引已建好）。", "",
             "| 模型 | 参数量 | 训练时间/秒 | 测试准确率 | 是非题准确率 | 建索引/秒 | 查询/秒 | 查询 GFLOPs |",
             "|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        acc = f"{r['acc']:.1%}" if "acc" in r else "—"
        tr = f"{r['train_seconds']:.1f}" if "train_seconds" in r else "—"
        lines.append(f"| {names[k]} | {r['params'] / 1e3:.0f}K | {tr} | {acc} | {r['yesno']:.1%} | "
                     f"{r['index_seconds']:.2f} | {r['query_seconds']:.3f} | {r['query_gflops']:.4g} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(RESULTS, f"ch2_fusion_{device.type}", table, CH2_TITLE)


if __name__ == "__main__":
    main()

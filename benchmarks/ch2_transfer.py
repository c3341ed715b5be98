"""第 2 章迁移基准：几何图形上预训练的 CLIP → 手写数字；零样本 / 线性探测 / 全量微调，对照随机初始化。

用法（结果写入 benchmarks/results/ch2.md 中本脚本的小节）：
    python benchmarks/ch2_transfer.py --clip-steps 300 --ft-steps 150 --write
"""
from __future__ import annotations

import argparse

import torch
from sklearn.linear_model import LogisticRegression

import clipedu
from clipedu.data import DigitsDataset, ShapesDataset
from clipedu.labs.fusion import fit_classifier, predict
from ch2_fusion import device_name, train_shapes_clip, write_section


class ImageClassifier(torch.nn.Module):
    """CLIP 图像塔 + 线性分类头（与 notebooks/02_pretrain_transfer.ipynb 相同）。"""

    def __init__(self, clip_model, num_classes: int = 10):
        super().__init__()
        self.clip = clip_model
        self.head = torch.nn.Linear(clip_model.config.embed_dim, num_classes)

    def forward(self, images):
        return self.head(self.clip.encode_image(images, normalize=True) * 10)


@torch.no_grad()
def features(model, X, device):
    model.eval()
    return torch.cat([model.encode_image(X[i:i + 512].to(device)).float().cpu() for i in range(0, len(X), 512)])


def linear_probe(F_tr, y_tr, F_te, y_te, per_class=None, seed=0) -> float:
    idx = torch.arange(len(y_tr))
    if per_class is not None:
        g = torch.Generator().manual_seed(seed)
        idx = torch.cat([torch.nonzero(y_tr == c)[:, 0][torch.randperm(int((y_tr == c).sum()), generator=g)[:per_class]]
                         for c in range(10)])
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(F_tr[idx].numpy(), y_tr[idx].numpy())
    return float((clf.predict(F_te.numpy()) == y_te.numpy()).mean())


def evaluate(name, model, tok, data, args, device) -> dict:
    (Xtr, ytr), (Xte, yte) = data
    F_tr, F_te = features(model, Xtr, device), features(model, Xte, device)
    clf = clipedu.zero_shot_classifier(model, tok, DigitsDataset.classnames, clipedu.TEMPLATES, device=device).float().cpu()
    r = {"零样本": ((F_te @ clf).argmax(-1) == yte).float().mean().item(),
         "线性探测（每类 10 张）": linear_probe(F_tr, ytr, F_te, yte, per_class=10, seed=args.seed),
         "线性探测（全部）": linear_probe(F_tr, ytr, F_te, yte)}
    torch.manual_seed(args.seed)
    net = ImageClassifier(model).to(device)
    fit_classifier(net, (Xtr,), ytr, steps=args.ft_steps, batch_size=64, lr=5e-4, seed=args.seed, device=device)
    r["全量微调"] = (predict(net, (Xte,)) == yte).float().mean().item()
    # 近迁移对照：几何图形的留出组合（概念见过、组合没见过），36 类零样本
    held = ShapesDataset("heldout", size=300, image_size=32, seed=args.seed)
    Xh, _, yh = held.get_batch(range(len(held)))
    clf_h = clipedu.zero_shot_classifier(model, tok, held.classnames, clipedu.TEMPLATES, device=device).float().cpu()
    r["留出组合零样本（36 类）"] = ((features(model, Xh, device) @ clf_h).argmax(-1) == yh).float().mean().item()
    print(name, r, flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip-steps", type=int, default=300)
    p.add_argument("--ft-steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    pretrained, tok, clip_s = train_shapes_clip(args.clip_steps, args.seed, device)
    torch.manual_seed(args.seed)
    scratch = clipedu.create_model("tiny-cpu").to(device)

    def tensors(ds):
        xs, _, ys = zip(*[ds[i] for i in range(len(ds))])
        return torch.stack(xs), torch.tensor(ys)

    data = (tensors(DigitsDataset("train", seed=args.seed)), tensors(DigitsDataset("test", seed=args.seed)))
    res = {"预训练": evaluate("pretrained", pretrained, tok, data, args, device),
           "随机初始化": evaluate("scratch", scratch, tok, data, args, device)}
    lines = [f"### 预训练与迁移（`python benchmarks/ch2_transfer.py --clip-steps {args.clip_steps} "
             f"--ft-steps {args.ft_steps}`，{device_name(device)}）", "",
             f"几何图形上预训练 {args.clip_steps} 步（{clip_s:.0f} 秒）；手写数字训练 {len(data[0][1])} 张、测试 {len(data[1][1])} 张；"
             f"全量微调 {args.ft_steps} 步、批 64。数字随机猜测 10%，最后一行（几何图形留出组合，36 类）随机 2.8%。", "",
             "| 迁移方式 | 几何图形预训练 | 随机初始化 | 差值 |", "|---|---|---|---|"]
    for m in res["预训练"]:
        a, b = res["预训练"][m], res["随机初始化"][m]
        lines.append(f"| {m} | {a:.1%} | {b:.1%} | {a - b:+.1%} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(f"ch2_transfer_{device.type}", table)


if __name__ == "__main__":
    main()

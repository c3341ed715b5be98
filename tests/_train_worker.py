"""测试用的训练进程：缩小的模型 + 确定性的小数据集，供 SIGKILL 续训与 torchrun DDP 测试启动。

单独运行：``python tests/_train_worker.py --out DIR --steps 6``；
分布式：``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_train_worker.py ...``。
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipedu.config import CLIPConfig, TextConfig, TrainConfig, VisionConfig  # noqa: E402


def tiny_model_config() -> CLIPConfig:
    """宽 64、1 层、16 px、上下文 16：一步只要几毫秒。

    宽 32 时这个小模型会在损失 ln(B) 的平台上停留上百步（学不动），宽 64 几十步就能走出来。
    """
    return CLIPConfig(
        embed_dim=32,
        vision=VisionConfig(arch="vit", image_size=16, patch_size=4, width=64, layers=1, heads=2),
        text=TextConfig(context_length=16, width=64, heads=2, layers=1),
    )


def tiny_train_config(out_dir, **kw) -> TrainConfig:
    # eps 比默认大：注意力 k 偏置的梯度数学上恒为 0（softmax 对整行加常数不变），数值上只剩
    # 舍入噪声；Adam 把它除以自己的均方根后会放大到 lr 量级，不同的求和顺序（单进程 vs 两进程）
    # 就会让这些“本不该动”的参数差出 1e-4。eps 大于噪声幅度后，这种放大消失。
    base = dict(model=tiny_model_config(), out_dir=str(out_dir), steps=6, batch_size=16, lr=2e-3,
                eps=1e-4, warmup_steps=2, eval_size=0, progress=False, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def tiny_dataset(size: int = 256):
    from clipedu.data import ShapesDataset
    return ShapesDataset(split="train", size=size, image_size=16, seed=0)


class SlowDataset(torch.utils.data.Dataset):
    """每个样本睡一会儿，让测试能在训练中途杀掉进程。没有 get_batch，走 DataLoader + collate 路径。"""

    def __init__(self, base, delay: float):
        self.base, self.delay = base, delay

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.base[i]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--resume", default=None)
    p.add_argument("--delay", type=float, default=0.0, help="每个样本的延迟（秒）")
    p.add_argument("--variants", default="plain", help="逗号分隔：plain, local, accum（分布式测试一次跑几种）")
    args = p.parse_args()
    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo")  # 自己建进程组，train() 就不会在结束时销毁它
    from clipedu.train import train

    data = tiny_dataset()
    if args.delay:
        data = SlowDataset(data, args.delay)
    extra = {"plain": {}, "local": {"local_loss": True}, "accum": {"accum_steps": 2}}
    for name in args.variants.split(","):
        cfg = tiny_train_config(Path(args.out) / name, steps=args.steps, batch_size=args.batch_size,
                                save_every=args.save_every, resume=args.resume, **extra[name])
        train(cfg, train_dataset=data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""测试用的训练进程：缩小的模型 + 确定性的小数据集，供 SIGKILL 续训与 torchrun DDP 测试启动。

单独运行：``PYTHONPATH=. python tests/_train_worker.py --out DIR --steps 6``；
分布式：``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_train_worker.py ...``。
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from tiny import SlowDataset, tiny_dataset, tiny_train_config  # 与本文件同目录


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
    from clipedu.stop_signal import TrainingStopped
    from clipedu.trainer import train

    data = tiny_dataset()
    if args.delay:
        data = SlowDataset(data, args.delay)
    extra = {"plain": {}, "local": {"local_loss": True}, "accum": {"accum_steps": 2}}
    for name in args.variants.split(","):
        cfg = tiny_train_config(Path(args.out) / name, steps=args.steps, batch_size=args.batch_size,
                                save_every=args.save_every, resume=args.resume, **extra[name])
        try:
            train(cfg, train_dataset=data)
        except TrainingStopped as e:  # SIGTERM：检查点已保存，像命令行一样以 128 + 信号编号退出
            return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

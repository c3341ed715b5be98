"""测试共用的小东西：缩小的模型与训练配置、确定性的小数据集（见 conftest.py 的夹具）。

``_train_worker.py``（被子进程与 torchrun 启动）也从这里取，所以它们是普通函数而不只是夹具。
"""
from __future__ import annotations

import time

import torch

from clipedu.config import CLIPConfig, TextConfig, TrainConfig, VisionConfig


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


def tiny_dataset(size: int = 256, image_size: int = 16):
    from clipedu.data import ShapesDataset
    return ShapesDataset(split="train", size=size, image_size=image_size, seed=0)


class SlowDataset(torch.utils.data.Dataset):
    """每个样本睡一会儿，让测试能在训练中途杀掉进程。没有 get_batch，走 DataLoader + collate 路径。"""

    def __init__(self, base, delay: float):
        self.base, self.delay = base, delay

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.base[i]


def tiny_resnet_config() -> CLIPConfig:
    """最小的 ModifiedResNet（rn50 的结构、每阶段 1 块、宽 8）：用来测 BatchNorm 的行为。"""
    return CLIPConfig(
        embed_dim=32,
        vision=VisionConfig(arch="resnet", image_size=32, patch_size=0, width=8,
                            layers=(1, 1, 1, 1), heads=2),
        text=TextConfig(context_length=16, width=64, heads=2, layers=1),
    )

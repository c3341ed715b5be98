"""图像预处理：CLIP 的均值方差、训练/评估变换与反归一化（见第 3 章 sec-step-data）。

变换的顺序照搬 open_clip：训练时 RandomResizedCrop(scale=(0.9, 1)) 只做轻微裁剪，
因为对比学习靠的是“图文配对”本身，不需要强数据增强；评估时按短边缩放再中心裁剪。
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import transforms as T

# OpenAI CLIP 在其预训练数据上统计的 RGB 均值与标准差；沿用它们，真实权重才能直接加载。
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_size(image_size) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size 应为正整数，实际为 {image_size!r} / image_size must be a positive int")
    return image_size


def convert_to_rgb(image):
    """灰度图、RGBA 图一律转成 3 通道 RGB，模型只接受 3 通道输入。"""
    return image.convert("RGB")


def train_transform(image_size: int) -> T.Compose:
    """训练变换：轻微随机裁剪 → RGB → 张量 → CLIP 归一化（PIL 图像输入）。"""
    size = _check_size(image_size)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        convert_to_rgb,
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def eval_transform(image_size: int) -> T.Compose:
    """评估变换：短边双三次缩放到 image_size → 中心裁剪 → RGB → 张量 → CLIP 归一化。"""
    size = _check_size(image_size)
    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        convert_to_rgb,
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def _stats(x: torch.Tensor, channel_dim: int):
    shape = [1] * x.dim()
    shape[channel_dim] = 3
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(shape)
    return mean, std


def normalize_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 图像 [..., H, W, 3] → CLIP 归一化的浮点张量 [..., 3, H, W]。

    内置数据集绕过 PIL 直接走这条路，批量处理比逐张 ToTensor 快得多。
    """
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"应为 uint8 的 [..., H, W, 3] 数组，实际为 {images.dtype} {tuple(images.shape)}")
    # 先在 uint8 上转成通道优先并连续存放（拷贝 1 字节/元素最便宜），再一次乘加完成 (x/255 - mean)/std
    x = torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).contiguous().float()
    scale = torch.tensor([1.0 / (255.0 * s) for s in CLIP_STD]).view(3, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)]).view(3, 1, 1)
    return x.mul_(scale).add_(bias)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """把 CLIP 归一化的图像 [3,H,W] 或 [B,3,H,W] 还原到 [0,1]，供 matplotlib 显示。"""
    if not torch.is_tensor(x) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"应为 [3, H, W] 或 [B, 3, H, W] 的张量，实际为 {got}")
    mean, std = _stats(x, x.dim() - 3)
    return (x * std + mean).clamp(0.0, 1.0)

"""训练精度：autocast、GradScaler、纯 bf16/fp16 参数与 CUDA 加速开关。

见第 5 章 sec-code-precision。

五种精度（与 open_clip 的 ``--precision`` 同名同义）：

* ``fp32``：参数与计算都用 float32，最稳，CPU 上的默认；
* ``amp_bf16``：参数 float32，前向在 ``torch.autocast(dtype=bfloat16)`` 里算；bf16
  指数位与 fp32 一样多，不会上溢，所以不需要损失缩放；
* ``amp_fp16``：同上但用 float16；fp16 只有 5 位指数，小梯度会下溢为 0，所以配
  ``GradScaler`` 先把损失放大再反传，更新前再缩回来；
* ``bf16`` / ``fp16``：把参数本身转成半精度（“纯”半精度），省一半显存，但优化器状态
  也是半精度，长训练会损失精度；``fp16`` 纯半精度没有主权重可供 GradScaler 反缩放，
  只适合短的微调实验。
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "amp_bf16", "amp_fp16")


@dataclass
class Precision:
    """一种精度设定在训练循环里需要的全部东西。"""

    name: str                                   # PRECISIONS 之一
    device: torch.device                        # 训练设备
    param_dtype: torch.dtype                    # 模型参数的 dtype
    autocast_dtype: Optional[torch.dtype]       # autocast 的计算 dtype；None 即不用
    scaler: Optional["torch.amp.GradScaler"]    # 仅 amp_fp16 使用

    def autocast(self):
        """前向与损失所在的上下文。"""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """amp_fp16 时先把损失放大再反传（fp16 的小梯度会下溢为 0）；其余精度原样返回。

        放大过的梯度在 optimizer.step 之前由 scaler.unscale_ 或 scaler.step 缩回。
        """
        return self.scaler.scale(loss) if self.scaler is not None else loss


def build_precision(name: str, device: torch.device) -> Precision:
    """按名字构造精度设定；未知名字给出清楚的错误。"""
    if name not in PRECISIONS:
        raise ValueError(f"未知精度 {name!r}；可选：{', '.join(PRECISIONS)} "
                         f"/ unknown precision")
    if device.type == "cuda":
        # Ampere 及以后的 GPU 上用 TF32 做 fp32 矩阵乘：精度足够训练，速度快数倍
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}
    param_dtype = half.get(name, torch.float32)
    autocast_dtype = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(name)
    scaler = torch.amp.GradScaler(device.type) if name == "amp_fp16" else None
    return Precision(name, device, param_dtype, autocast_dtype, scaler)


def prepare_model(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """把模型搬到设备、转成参数 dtype；卷积图像塔在 CUDA 上用 channels_last 布局。"""
    model = model.to(device=precision.device, dtype=precision.param_dtype)
    if precision.device.type == "cuda" and _has_conv_tower(model):
        # NHWC 布局让 cuDNN 用上 Tensor Core 卷积核；ViT 只有一个 patch 卷积，收益可忽略
        model.to_channels_last()
    return model


def _has_conv_tower(model: torch.nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    return getattr(getattr(cfg, "vision", None), "arch", "vit") == "resnet"

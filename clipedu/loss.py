"""对称 InfoNCE 损失（见第 4 章 sec-infonce 与第 5 章 sec-code-loss）。

模型只返回特征，损失放在模型之外：这样分布式训练时可以先把各进程的特征收集起来，
再在整个全局批上算同一个损失。记号：逆温度 1/τ 乘在余弦相似度上（代码里叫
``inv_temperature``）；模型里可学习的参数是对数逆温度 ln(1/τ)（``model.logit_scale``），
``CLIP.forward`` 返回的是它的 exp，也就是 1/τ。
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributed import all_gather_features, world_info


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError(
            f"特征应为二维 (B, D)，实际为图像 {tuple(image_features.shape)}、"
            f"文本 {tuple(text_features.shape)}"
        )
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"图像与文本特征形状应相同（第 i 行互为正样本），实际为 "
            f"{tuple(image_features.shape)} 与 {tuple(text_features.shape)}"
        )


def _inv_temperature(inv_temperature, logit_scale):
    """新名字 ``inv_temperature`` 与旧关键字 ``logit_scale=``（同样是 1/τ）二选一。"""
    if logit_scale is not None:
        if inv_temperature is not None:
            raise TypeError("inv_temperature 与旧名 logit_scale 只能给一个"
                            "（两者都是 1/τ）")
        return logit_scale
    if inv_temperature is None:
        raise TypeError("缺少参数 inv_temperature（逆温度 1/τ，即 CLIP.forward 的"
                        "第三个输出）")
    return inv_temperature


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              inv_temperature: Optional[torch.Tensor] = None, *,
              logit_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """对称 InfoNCE 损失（见第 4 章 sec-infonce）。特征需已 L2 归一化。

    ``inv_temperature`` 是逆温度 1/τ（已取 exp，不是 ln(1/τ)）；旧关键字
    ``logit_scale=`` 仍然接受，含义相同。第 i 张图与第 i 条文本互为正样本，
    批内其余都是负样本。
    """
    inv_temperature = _inv_temperature(inv_temperature, logit_scale)
    _check_features(image_features, text_features)
    logits = inv_temperature * image_features @ text_features.T  # (B, B)，s_ij / τ
    labels = torch.arange(logits.shape[0], device=logits.device)
    # 图→文：每行做 softmax；文→图：每列做 softmax（即对转置的每行）
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class ClipLoss(nn.Module):
    """分布式版本的 ``clip_loss``：先收集所有进程的特征，再算对称 InfoNCE。

    参数
    ----
    local_loss:
        False（默认）：每个进程都在完整的 (B, B) 相似度矩阵上算整批损失，各进程结果
        相同。True：每个进程只算自己那 B_local 行（图→文）和 B_local 列（文→图），
        矩阵为 (B_local, B)，显存与计算量降为 1/world_size。
    gather_with_grad:
        True（默认）：收集来的特征保留梯度，经 DDP 平均后，每个参数的梯度与单进程
        整批计算完全一致（两种 local_loss 都是）。
        False：别的进程的特征当作常数，只有本进程那一块带梯度，省一次反向通信。
        确切地说（设 W = world_size）：

        * ``local_loss=False``：每个进程算的都是整批损失 L，本进程特征收到的正是
          ∂L/∂(本块)；DDP 对 W 个进程求平均，所以两座塔的参数梯度**恰好是整批梯度
          的 1/W**；而 1/τ 在每个进程里都收到完整的 ∂L/∂(1/τ)，平均后仍是完整梯度。
          也就是说两座塔的有效学习率缩小为 1/W（Adam 几乎抵消这种整体缩放，SGD 不会）。
        * ``local_loss=True``：本进程的特征作为别的进程的负样本时贡献的梯度丢了，
          梯度不再与整批成比例，只是近似。
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True):
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                inv_temperature: Optional[torch.Tensor] = None, *,
                logit_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        inv_temperature = _inv_temperature(inv_temperature, logit_scale)
        _check_features(image_features, text_features)
        rank, world_size = world_info()
        if world_size == 1:
            return clip_loss(image_features, text_features, inv_temperature)

        # (B, D)，B = world_size * B_local
        all_image = all_gather_features(image_features, self.gather_with_grad)
        all_text = all_gather_features(text_features, self.gather_with_grad)
        if not self.local_loss:
            # 每个进程都算整批损失；gather_with_grad=True 时，可求导的 all_gather
            # 在反向时把各进程的梯度求和送回特征的主人，DDP 平均后仍等于整批梯度
            return clip_loss(all_image, all_text, inv_temperature)

        B_local = image_features.shape[0]
        logits_per_image = inv_temperature * image_features @ all_text.T  # (B_local, B)
        logits_per_text = inv_temperature * text_features @ all_image.T   # (B_local, B)
        # 本进程第 k 个样本在全局批里是第 rank * B_local + k 个，它的正样本就在
        # 那一列，所以标签要整体平移 rank * B_local；不平移的话每个进程都会把
        # 前 B_local 列当成正样本。
        labels = torch.arange(B_local, device=image_features.device) + rank * B_local
        # 各进程的局部损失取平均，正好等于整批的对称损失（每行/每列恰好被一个
        # 进程算一次）。
        return (F.cross_entropy(logits_per_image, labels)
                + F.cross_entropy(logits_per_text, labels)) / 2

"""OpenAI 改进版 ResNet 图像塔 ModifiedResNet（见第 3 章 sec-step-model）。

与 torchvision 的 ResNet 相比有三处改动（CLIP 论文 2.4 节）：
1. 三层 3×3 卷积的“茎”，最后用平均池化而不是最大池化；
2. 抗锯齿的下采样：步长 > 1 时先平均池化再做 1×1 卷积，而不是用带步长的卷积直接跳采样；
3. 最后用注意力池化（AttentionPool2d）代替全局平均池化：以各位置的均值作为查询，做一次多头注意力。
参数名与 OpenAI 完全一致（``visual.layer1.0.downsample.-1`` 是那层无参数的平均池化），可直接加载真实权重。
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Bottleneck(nn.Module):
    """1×1 → 3×3 → (平均池化) → 1×1 的瓶颈块；输出通道为 planes × 4。"""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        # 所有卷积步长都是 1；需要下采样时由 avgpool 完成（抗锯齿）
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # 键名 "-1" 来自 OpenAI：先池化、再 1×1 卷积对齐通道
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """注意力池化：查询是全局均值词元，键和值是所有位置（含均值），输出投影到 output_dim。"""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"注意力池化的通道数 {embed_dim} 应能被头数 {num_heads} 整除")
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, N=H·W, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, N+1, C)
        x = x + self.positional_embedding.to(x.dtype)
        h, d = self.num_heads, C // self.num_heads
        # 只有第 0 个（均值）位置发出查询：q 为 (B, heads, 1, d_head)
        q = self.q_proj(x[:, :1]).view(B, 1, h, d).transpose(1, 2)
        # 所有 N+1 个位置都给出键和值：(B, heads, N+1, d_head)
        k = self.k_proj(x).view(B, H * W + 1, h, d).transpose(1, 2)
        v = self.v_proj(x).view(B, H * W + 1, h, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, d_head)
        y = y.transpose(1, 2).reshape(B, C)  # (B, C)
        return self.c_proj(y)  # (B, output_dim)


class ModifiedResNet(nn.Module):
    """OpenAI 的 ModifiedResNet：三层卷积茎 + 四个阶段的 Bottleneck + 注意力池化（见第 3 章 sec-step-model）。

    ``layers`` 是四个阶段的块数（RN50 为 (3, 4, 6, 3)），``width`` 是第一阶段的通道数，
    最后特征图为 input_resolution / 32 见方、通道 width × 32。
    """

    def __init__(self, layers, output_dim: int, heads: int, input_resolution: int = 224, width: int = 64):
        super().__init__()
        layers = tuple(layers) if isinstance(layers, (list, tuple)) else None
        if layers is None or len(layers) != 4:
            raise ValueError(f"ModifiedResNet 的 layers 应为 4 个阶段的块数，如 (3, 4, 6, 3)，实际为 {layers!r}")
        if input_resolution % 32 != 0:
            raise ValueError(f"ModifiedResNet 的 image_size 应为 32 的倍数（总下采样 32 倍），实际为 {input_resolution}")
        self.output_dim, self.input_resolution = output_dim, input_resolution
        self.grad_checkpointing = False
        # 茎：3 个 3×3 卷积（第一个步长 2），再 2×2 平均池化 → 分辨率 /4
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width  # _make_layer 逐阶段更新它
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32  # ResNet 的特征维度
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        """OpenAI 的初始化：注意力池化的投影 N(0, C^-0.5)；每个块最后的 bn3 增益置零，块起初是恒等映射。"""
        std = self.attnpool.c_proj.in_features ** -0.5
        for lin in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(lin.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for name, param in stage.named_parameters():
                if name.endswith("bn3.weight"):
                    nn.init.zeros_(param)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """逐块重算。注意：重算会让 BatchNorm 的滑动统计多更新一次（同一批数据，影响很小），梯度不变。"""
        self.grad_checkpointing = enable

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = self.stem(x)  # (B, width, H/4, W/4)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        # 此时 x 为 (B, width·32, H/32, W/32)
        return self.attnpool(x)  # (B, output_dim)


__all__ = ["Bottleneck", "AttentionPool2d", "ModifiedResNet"]

"""文本条件的小型 UNet：16–32 像素的去噪网络（见第 2 章 sec-diffusion-lab）。

条件信号是冻结的 clipedu CLIP 文本塔给出的句向量（L2 归一化后的 D 维嵌入）。它与时间步编码相加，
再通过 FiLM（逐通道的缩放与平移）注入每个残差块——这与 GLIDE、DALL·E 2 解码器把 CLIP 嵌入
加到时间嵌入上的做法相同。Stable Diffusion 则用交叉注意力读取文本塔的逐词元特征；我们的标题很短、
句向量已足够区分"颜色 × 形状"，所以选更便宜的 FiLM。
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .diffusion import timestep_embedding


@dataclass
class UNetConfig:
    image_size: int = 16            # 输入边长（像素），需能被 2^(len(channel_mults)-1) 整除
    in_channels: int = 3            # 图像通道数
    base_channels: int = 32         # 第一层的通道数
    channel_mults: tuple = (1, 2, 2)  # 各分辨率层的通道倍数；层数 − 1 次下采样
    cond_dim: int = 128             # 条件向量维度（= CLIP 的 embed_dim）；0 表示无条件模型
    groups: int = 8                 # GroupNorm 的组数
    conv_before_upsample: bool = False  # 上采样先卷积再放大（该卷积省 3/4 的计算，但生成质量变差，见 _upsample）
    channels_last: bool = True      # 卷积用 NHWC 内存布局（CPU 上采样快约 20 %，训练持平；数值只差舍入）


class ResBlock(nn.Module):
    """GroupNorm → SiLU → 卷积，中间用 FiLM 注入（时间 + 文本）嵌入。"""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)  # 输出逐通道的 (scale, shift)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # 各 (B, out_ch, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.conv2(self.act(h)) + self.skip(x)


class TinyUNet(nn.Module):
    """``model(x_t, t, cond=None, drop_cond=None) -> ε̂``，x_t 为 (B, C, H, W)，cond 为 (B, cond_dim)。

    ``drop_cond`` 为 True 的样本用可学习的"空条件"向量代替 cond，供无分类器引导使用。
    """

    def __init__(self, config: Optional[UNetConfig] = None):
        super().__init__()
        self.config = c = config or UNetConfig()
        down_factor = 2 ** (len(c.channel_mults) - 1)
        if c.image_size % down_factor:
            raise ValueError(f"image_size={c.image_size} 应能被 {down_factor} 整除（channel_mults={c.channel_mults}）")
        C0, emb_dim = c.base_channels, 4 * c.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(C0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if c.cond_dim > 0:
            self.cond_proj = nn.Linear(c.cond_dim, emb_dim)
            self.null_cond = nn.Parameter(torch.zeros(c.cond_dim))
        self.conv_in = nn.Conv2d(c.in_channels, C0, 3, padding=1)
        chans = [C0 * m for m in c.channel_mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = C0
        for i, ch in enumerate(chans):
            self.down.append(ResBlock(prev, ch, emb_dim, c.groups))
            last = i == len(chans) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.mid = ResBlock(prev, prev, emb_dim, c.groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            self.up.append(ResBlock(prev + ch, ch, emb_dim, c.groups))  # 拼接同分辨率的跳连
            first = i == 0
            self.upsample.append(nn.Identity() if first else self._upsample(ch, chans[i - 1]))
            prev = ch if first else chans[i - 1]
        self.norm_out = nn.GroupNorm(c.groups, prev)
        self.conv_out = nn.Conv2d(prev, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # 初始输出 ε̂ = 0，训练起点更稳
        nn.init.zeros_(self.conv_out.bias)

    def _upsample(self, in_ch: int, out_ch: int) -> nn.Sequential:
        """分辨率加倍的一层：默认先最近邻放大再 3×3 卷积。

        反过来先卷积再放大，卷积只在 1/4 的像素上算，CPU 上训练快约 10 %；但 6 个种子上，
        w=3 时见过的组合的生成正确率中位数低了约 10 个百分点（benchmarks/results/ch2.md），所以默认不用。"""
        conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        up = nn.Upsample(scale_factor=2, mode="nearest")
        return nn.Sequential(conv, up) if self.config.conv_before_upsample else nn.Sequential(up, conv)

    def embed(
        self, t: torch.Tensor, cond: Optional[torch.Tensor],
        drop_cond: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """时间嵌入 + 条件嵌入，(B, emb_dim)。"""
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        if self.config.cond_dim == 0:
            if cond is not None:
                raise ValueError("这是无条件 UNet（cond_dim=0），却收到了 cond")
            return emb
        if cond is None:  # 没给条件 = 全部用空条件
            cond = self.null_cond.expand(t.shape[0], -1)
        elif cond.shape != (t.shape[0], self.config.cond_dim):
            expected = (t.shape[0], self.config.cond_dim)
            raise ValueError(
                f"cond 的形状应为 ({expected[0]}, {expected[1]})，"
                f"实际为 {tuple(cond.shape)}"
            )
        if drop_cond is not None:
            null = self.null_cond.to(cond.dtype).expand_as(cond)
            cond = torch.where(drop_cond[:, None], null, cond)
        return emb + self.cond_proj(cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None,
                drop_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, C, H, W = x.shape
        c = self.config
        if (C, H, W) != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"输入形状应为 (B, {c.in_channels}, {c.image_size}, {c.image_size})，实际为 {tuple(x.shape)}")
        emb = self.embed(t, cond, drop_cond)  # (B, emb_dim)
        if c.channels_last:  # 之后每层卷积、GroupNorm、拼接都沿用这个布局
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(x)  # (B, C0, H, W)
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)  # 分辨率减半（最后一层除外）
        h = self.mid(h, emb)
        for block, up in zip(self.up, self.upsample):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            h = up(h)  # 分辨率加倍（最后一层除外）
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))  # (B, C, H, W)


__all__ = ["UNetConfig", "TinyUNet", "ResBlock"]

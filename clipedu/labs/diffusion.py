"""从零实现的 DDPM：噪声表、前向加噪、ε 目标、祖先采样与无分类器引导（见第 2 章 sec-diffusion-lab）。

记号与第 2 章正文一致（Ho 等 2020 的 DDPM 论文）：β_t 是第 t 步加入的噪声方差，α_t = 1 − β_t，
ᾱ_t = α_1·α_2·…·α_t。代码里的下标从 0 开始：``t = 0`` 对应论文的 x_1，``t = T-1`` 对应 x_T；
``x_{-1}`` 就是干净数据 x_0，约定 ᾱ_{-1} = 1。

噪声表以 float64 存放，用时再转成数据的精度，这样 ᾱ_t 的连乘不会在 float32 下积累误差。
去噪网络的调用约定：``model(x_t, t, cond=None, drop_cond=None) -> ε̂``，``drop_cond`` 为 True 的
样本改用"空条件"，这就是无分类器引导（classifier-free guidance，Ho & Salimans 2022）所需的两种预测。
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..optim import adamw


@dataclass
class DiffusionConfig:
    timesteps: int = 200          # 扩散步数 T；教学规模 100–200 步已够，原论文用 1000
    schedule: str = "cosine"      # 噪声表："linear"（DDPM 原文）或 "cosine"（Nichol & Dhariwal 2021）
    beta_start: float = 1e-4      # 线性表的 β_1（按 T=1000 标定，T 更小时按比例放大）
    beta_end: float = 0.02        # 线性表的 β_T（同上）
    clip_denoised: bool = True    # 采样时把预测的 x̂_0 截断到 [-1, 1]（图像像素范围）


def make_beta_schedule(kind: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """返回 float64 的 β_1..β_T（长度 T）。见第 2 章 sec-diffusion-lab。"""
    if not isinstance(timesteps, int) or timesteps < 2:
        raise ValueError(f"timesteps 应为 ≥2 的整数，实际为 {timesteps!r}")
    if kind == "linear":
        scale = 1000 / timesteps  # 让不同 T 下的总噪声量相近（improved DDPM 的做法）
        return torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008  # 小偏移，避免 t=0 附近 β 过小
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
        return betas.clamp(max=0.999)  # 末端 β→1 会让采样数值发散
    raise ValueError(f"未知噪声表 {kind!r}；可选 'linear' 或 'cosine' / unknown schedule")


def _extract(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """按每个样本的 t 取出系数，并整形成 (B, 1, 1, …) 以便与 x 广播。"""
    out = values.to(x.device)[t].to(x.dtype)
    return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """无分类器引导：ε̃ = ε_∅ + w·(ε_c − ε_∅)。w=1 即普通条件模型，w=0 即无条件模型。

    Ho & Salimans 原文写作 (1+w')ε_c − w'ε_∅，二者只差 w = 1 + w' 的换元。
    """
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


class GaussianDiffusion:
    """DDPM 的全部"数学部分"；网络另给（见第 2 章 sec-diffusion-lab）。"""

    def __init__(self, config: Optional[DiffusionConfig] = None):
        self.config = config or DiffusionConfig()
        c = self.config
        self.betas = make_beta_schedule(c.schedule, c.timesteps, c.beta_start, c.beta_end)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        # 后验 q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)：
        #   μ̃_t = coef_x0·x_0 + coef_xt·x_t，β̃_t = β_t (1−ᾱ_{t-1}) / (1−ᾱ_t)
        self.posterior_variance = self.betas * (1 - self.alpha_bars_prev) / (1 - self.alpha_bars)
        self.posterior_coef_x0 = self.betas * self.alpha_bars_prev.sqrt() / (1 - self.alpha_bars)
        self.posterior_coef_xt = (1 - self.alpha_bars_prev) * self.alphas.sqrt() / (1 - self.alpha_bars)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t):
            t = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        if t.shape != (x.shape[0],):
            raise ValueError(f"t 的形状应为 ({x.shape[0]},)，实际为 {tuple(t.shape)}")
        if t.min() < 0 or t.max() >= self.timesteps:
            lo, hi = int(t.min()), int(t.max())
            last = self.timesteps - 1
            raise ValueError(f"t 应在 [0, {last}] 内，实际范围 [{lo}, {hi}]")
        return t.long()

    # ---- 前向过程 ----
    def q_sample(
        self, x0: torch.Tensor, t, noise: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """闭式加噪：x_t = √ᾱ_t · x_0 + √(1−ᾱ_t) · ε，一步跳到任意 t。"""
        t = self._check_t(t, x0)
        noise = torch.randn_like(x0) if noise is None else noise
        signal_coef = _extract(self.alpha_bars.sqrt(), t, x0)
        noise_coef = _extract((1 - self.alpha_bars).sqrt(), t, x0)
        return signal_coef * x0 + noise_coef * noise

    def q_step(
        self, x_prev: torch.Tensor, t, noise: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """单步加噪：x_t = √α_t · x_{t-1} + √β_t · ε（用来逐步验证闭式公式）。"""
        t = self._check_t(t, x_prev)
        noise = torch.randn_like(x_prev) if noise is None else noise
        signal_coef = _extract(self.alphas.sqrt(), t, x_prev)
        noise_coef = _extract(self.betas.sqrt(), t, x_prev)
        return signal_coef * x_prev + noise_coef * noise

    def q_posterior(
        self, x0: torch.Tensor, xt: torch.Tensor, t
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """后验 q(x_{t-1} | x_t, x_0) 的均值 μ̃_t 与方差 β̃_t（方差已整形为可广播）。"""
        t = self._check_t(t, xt)
        coef_x0 = _extract(self.posterior_coef_x0, t, xt)
        coef_xt = _extract(self.posterior_coef_xt, t, xt)
        mean = coef_x0 * x0 + coef_xt * xt
        return mean, _extract(self.posterior_variance, t, xt)

    def predict_x0(self, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """由 ε 预测反推 x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t。"""
        t = self._check_t(t, xt)
        noise_coef = _extract((1 - self.alpha_bars).sqrt(), t, xt)
        signal_coef = _extract(self.alpha_bars.sqrt(), t, xt)
        return (xt - noise_coef * eps) / signal_coef

    # ---- 训练目标 ----
    def snr(self, t) -> torch.Tensor:
        """信噪比 SNR(t) = ᾱ_t / (1 − ᾱ_t)：x_t 里信号与噪声的方差之比（float64，在 CPU 上）。"""
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        return self.alpha_bars[t] / (1 - self.alpha_bars[t])

    def loss(
        self, model: nn.Module, x0: torch.Tensor, cond=None, p_uncond: float = 0.0,
        generator: Optional[torch.Generator] = None,
        snr_gamma: Optional[float] = None,
    ) -> torch.Tensor:
        """ε 预测目标：E_{t,ε} ‖ε − ε_θ(x_t, t, c)‖²（逐元素取平均）。

        以概率 p_uncond 丢掉条件，为 CFG 学无条件模型。
        给 ``snr_gamma``（γ）时按 Min-SNR-γ（Hang 等 2023）给每个样本
        加权 min(SNR(t), γ) / SNR(t)：SNR 大于 γ（噪声小）的步降为 γ/SNR(t)，
        其余步权重为 1。不给时各步等权，即 DDPM 的 L_simple。
        """
        if snr_gamma is not None and not snr_gamma > 0:
            raise ValueError(
                f"snr_gamma 应为正数，实际为 {snr_gamma} / snr_gamma must be positive"
            )
        B = x0.shape[0]
        t = _randint(self.timesteps, (B,), generator, x0.device)
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        xt = self.q_sample(x0, t, noise)
        drop = None
        if cond is not None and p_uncond > 0:
            drop = _rand((B,), generator, x0.device) < p_uncond
        if cond is not None:
            eps = model(xt, t, cond=cond, drop_cond=drop)
        else:
            eps = model(xt, t)
        if snr_gamma is None:
            return F.mse_loss(eps, noise)
        snr = self.snr(t).to(x0.device)
        # min(SNR, γ)/SNR = min(γ/SNR, 1)；SNR = 0 时为 1。形状 (B,)
        weight = (snr_gamma / snr).clamp(max=1.0).to(x0.dtype)
        per_sample = F.mse_loss(eps, noise, reduction="none").flatten(1).mean(1)
        return (weight * per_sample).mean()

    # ---- 反向过程 ----
    def predict_eps(self, model: nn.Module, xt: torch.Tensor, t: torch.Tensor, cond=None,
                    guidance_scale: float = 1.0) -> torch.Tensor:
        """网络的 ε 预测。

        有条件且 w≠1 时把有条件/无条件拼成一批，一次前向算两份，再按 CFG 组合。
        """
        if cond is None:
            return model(xt, t)
        if guidance_scale == 1.0:
            return model(xt, t, cond=cond)
        B = xt.shape[0]
        keep = torch.zeros(B, dtype=torch.bool)
        drop_all = torch.ones(B, dtype=torch.bool)
        drop = torch.cat([keep, drop_all]).to(xt.device)
        eps = model(
            torch.cat([xt, xt]), torch.cat([t, t]),
            cond=torch.cat([cond, cond]), drop_cond=drop,
        )
        eps_cond, eps_uncond = eps[:B], eps[B:]
        return cfg_combine(eps_uncond, eps_cond, guidance_scale)

    def p_sample_step(
        self, model: nn.Module, xt: torch.Tensor, t: int, cond=None,
        guidance_scale: float = 1.0, generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """祖先采样的一步：x_{t-1} = μ̃_t(x̂_0(x_t, ε̂), x_t) + √β̃_t · z。

        最后一步不加噪声。
        """
        tt = torch.full((xt.shape[0],), t, dtype=torch.long, device=xt.device)
        eps = self.predict_eps(model, xt, tt, cond, guidance_scale)
        x0_hat = self.predict_x0(xt, tt, eps)
        if self.config.clip_denoised:
            x0_hat = x0_hat.clamp(-1, 1)
        mean, var = self.q_posterior(x0_hat, xt, tt)
        if t == 0:
            return mean
        return mean + var.sqrt() * _randn(xt.shape, generator, xt.device, xt.dtype)

    @torch.no_grad()
    def sample(self, model: nn.Module, shape: tuple, cond=None, guidance_scale: float = 1.0,
               generator: Optional[torch.Generator] = None, device=None,
               callback: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
        """从 x_T ~ N(0, I) 出发走 T 步祖先采样。给定 generator 时结果可复现。"""
        device = torch.device(device) if device is not None else next(model.parameters()).device
        if cond is not None and cond.shape[0] != shape[0]:
            raise ValueError(f"cond 的批大小应为 {shape[0]}，实际为 {cond.shape[0]}")
        was_training = model.training
        model.eval()
        x = _randn(shape, generator, device, torch.float32)
        for t in reversed(range(self.timesteps)):
            x = self.p_sample_step(model, x, t, cond, guidance_scale, generator)
            if callback is not None:
                callback(t, x)
        model.train(was_training)
        return x


# ---- 随机数：生成器可以在 CPU 上，而数据在 GPU 上 ----
def _gen_device(generator, device):
    return generator.device if generator is not None else device


def _randn(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=_gen_device(generator, device), dtype=dtype).to(device)


def _rand(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=_gen_device(generator, device)).to(device)


def _randint(high, shape, generator, device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=generator, device=_gen_device(generator, device)).to(device)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """把整数步 t 编码成 dim 维正弦向量（与 Transformer 位置编码同式）。"""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ToyDenoiser(nn.Module):
    """二维玩具数据的去噪 MLP：输入 (x_t, t 的正弦编码)，输出 ε̂（见第 2 章 sec-diffusion-lab）。"""

    def __init__(self, dim: int = 2, hidden: int = 128, time_dim: int = 32):
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(
            nn.Linear(dim + time_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, D = x.shape
        return self.net(torch.cat([x, timestep_embedding(t, self.time_dim)], dim=-1))  # (B, D)


def toy_data_2d(n: int, generator: Optional[torch.Generator] = None, noise: float = 0.05) -> torch.Tensor:
    """双月牙（two moons）二维点云，缩放到约 [-1, 1]。"""
    half = n // 2
    a = torch.rand(half, generator=generator) * math.pi
    b = torch.rand(n - half, generator=generator) * math.pi
    upper = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    lower = torch.stack([1 - torch.cos(b), 0.5 - torch.sin(b)], dim=1)
    pts = torch.cat([upper, lower]) + noise * torch.randn(n, 2, generator=generator)
    return (pts - torch.tensor([0.5, 0.25])) / 1.2


def train_diffusion(model: nn.Module, diffusion: GaussianDiffusion, x0: torch.Tensor, cond=None, *,
                    steps: int = 1000, batch_size: int = 128, lr: float = 2e-3, p_uncond: float = 0.1,
                    snr_gamma: Optional[float] = None, ema=None,
                    time_budget: Optional[float] = None, seed: int = 0, device=None) -> list[dict]:
    """在一整块张量数据（x0 与可选的条件 cond）上训练去噪网络，返回逐步的 {step, loss, time}。

    ``snr_gamma`` 传给 ``GaussianDiffusion.loss``（Min-SNR-γ 加权）；``ema`` 是一个
    ``clipedu.ema.ModelEMA``，每步之后用它更新平均后的参数（采样时用 ``ema.module``）。
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if cond is not None and cond.shape[0] != x0.shape[0]:
        raise ValueError(f"cond 与 x0 的样本数应相同，实际为 {cond.shape[0]} 与 {x0.shape[0]}")
    g = torch.Generator().manual_seed(seed)  # CPU 生成器：抽批次、t 与噪声都可复现
    opt = adamw(model.parameters(), next(model.parameters()).device, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))  # 短预热，之后恒定
    model.train()
    history, start = [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, x0.shape[0], (batch_size,), generator=g)
        xb = x0[idx].to(device)
        cb = cond[idx].to(device) if cond is not None else None
        loss = diffusion.loss(model, xb, cb, p_uncond=p_uncond, generator=g, snr_gamma=snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        elapsed = time.perf_counter() - start
        history.append({"step": step + 1, "loss": loss.item(), "time": elapsed})
        if time_budget is not None and elapsed >= time_budget:
            break
    model.eval()
    return history


# ---- 与 CLIP 对接：像素空间 [-1, 1] ↔ CLIP 归一化 ----
def clip_to_pixels(images: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
    """CLIP 归一化的图像 → 扩散模型用的 [-1, 1] 像素；给 size 时用 2×2 平均池化等方式缩到该边长。"""
    from ..data import denormalize
    x = denormalize(images) * 2 - 1
    return x if size is None or size == x.shape[-1] else F.interpolate(x, size=size, mode="area")


def pixels_to_clip(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """[-1, 1] 像素 → CLIP 归一化并双线性放大到 size（CLIP 在 32 px 上训练，生成图只有 16 px）。"""
    from ..data import CLIP_MEAN, CLIP_STD
    x = (x.clamp(-1, 1) + 1) / 2
    if x.shape[-1] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def generate_and_classify(diffusion: GaussianDiffusion, unet: nn.Module, clip_model: nn.Module,
                          classifier: torch.Tensor, text_emb: torch.Tensor, class_ids: torch.Tensor,
                          guidance_scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """按类别的文本嵌入生成图像，再用 CLIP 零样本分类器判别（见第 2 章 sec-diffusion-lab）。

    text_emb 为各类提示词的 CLIP 文本嵌入 [C, D]，class_ids 为要生成的类别 [N]。
    返回 (生成图 [N, 3, s, s]，像素 [-1, 1]；CLIP 预测的类别 [N])。
    """
    device = next(unet.parameters()).device
    s = unet.config.image_size
    cond = text_emb.to(device)[class_ids.to(device)]
    images = diffusion.sample(unet, (len(class_ids), 3, s, s), cond=cond, guidance_scale=guidance_scale,
                              generator=torch.Generator().manual_seed(seed), device=device)
    clip_device = next(clip_model.parameters()).device
    feats = clip_model.encode_image(pixels_to_clip(images.to(clip_device)))
    return images.cpu(), (feats.float() @ classifier.to(clip_device).float()).argmax(-1).cpu()


__all__ = [
    "DiffusionConfig", "GaussianDiffusion", "make_beta_schedule", "cfg_combine", "timestep_embedding",
    "ToyDenoiser", "toy_data_2d", "train_diffusion", "clip_to_pixels", "pixels_to_clip",
    "generate_and_classify",
]

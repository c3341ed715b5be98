"""DDPM 的数学与小型 UNet：闭式加噪、后验、采样器确定性、CFG、能学会。"""
import pytest
import torch

from clipedu.labs.diffusion import (
    DiffusionConfig, GaussianDiffusion, ToyDenoiser, cfg_combine, make_beta_schedule, toy_data_2d,
    train_diffusion,
)
from clipedu.labs.unet import TinyUNet, UNetConfig


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_is_valid(kind):
    betas = make_beta_schedule(kind, 100)
    assert betas.dtype == torch.float64 and betas.shape == (100,)
    assert (betas > 0).all() and (betas < 1).all()
    alpha_bars = torch.cumprod(1 - betas, 0)
    assert (alpha_bars[1:] < alpha_bars[:-1]).all()
    assert alpha_bars[-1] < 0.01  # x_T 几乎是纯噪声


def test_bad_schedule_and_t_raise():
    with pytest.raises(ValueError, match="噪声表"):
        make_beta_schedule("quadratic", 10)
    d = GaussianDiffusion(DiffusionConfig(timesteps=10))
    with pytest.raises(ValueError, match="t 应在"):
        d.q_sample(torch.zeros(2, 3), torch.tensor([0, 10]))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_equals_iterated_steps_deterministic_part(kind):
    # 噪声置零时，逐步 x_t = √α_t x_{t-1} 的连乘必须等于闭式的 √ᾱ_t x_0
    d = GaussianDiffusion(DiffusionConfig(timesteps=50, schedule=kind))
    x0 = torch.randn(4, 3, dtype=torch.float64)
    x = x0
    for t in range(50):
        x = d.q_step(x, t, noise=torch.zeros_like(x))
        torch.testing.assert_close(x, d.q_sample(x0, t, noise=torch.zeros_like(x0)))


def test_closed_form_statistics_match_iterated_steps():
    # 逐步加随机噪声 t 次，样本的均值与标准差应与闭式 N(√ᾱ_t x_0, (1-ᾱ_t) I) 一致
    torch.manual_seed(0)
    d = GaussianDiffusion(DiffusionConfig(timesteps=40, schedule="linear"))
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    x = x0
    for t in range(40):
        x = d.q_step(x[:, None], t)[:, 0]
        if t in (0, 9, 39):
            ab = d.alpha_bars[t]
            assert abs(x.mean().item() - (ab.sqrt() * 0.7).item()) < 0.01
            assert abs(x.std().item() - (1 - ab).sqrt().item()) < 0.01
            closed = d.q_sample(x0[:, None], t)[:, 0]
            assert abs(closed.std().item() - x.std().item()) < 0.01


def test_posterior_matches_gaussian_conditioning():
    # μ̃_t、β̃_t 与联合高斯 (x_{t-1}, x_t | x_0) 的条件分布公式逐项一致（float64 手算）
    d = GaussianDiffusion(DiffusionConfig(timesteps=30))
    x0 = torch.tensor([[0.3], [-0.8]], dtype=torch.float64)
    xt = torch.tensor([[0.1], [1.2]], dtype=torch.float64)
    for t in (1, 7, 29):
        ab_prev, ab, a = d.alpha_bars_prev[t], d.alpha_bars[t], d.alphas[t]
        cov = a.sqrt() * (1 - ab_prev)  # Cov(x_{t-1}, x_t | x_0)
        mean = ab_prev.sqrt() * x0 + cov / (1 - ab) * (xt - ab.sqrt() * x0)
        var = (1 - ab_prev) - cov ** 2 / (1 - ab)
        got_mean, got_var = d.q_posterior(x0, xt, t)
        torch.testing.assert_close(got_mean, mean)
        torch.testing.assert_close(got_var.flatten(), var.expand(2))
    # t = 0 时后验退化为 x_0 本身（方差 0）
    mean0, var0 = d.q_posterior(x0, xt, 0)
    torch.testing.assert_close(mean0, x0)
    assert var0.abs().max() < 1e-12


def test_predict_x0_inverts_q_sample():
    d = GaussianDiffusion(DiffusionConfig(timesteps=20))
    x0, eps = torch.randn(5, 2), torch.randn(5, 2)
    t = torch.tensor([0, 3, 8, 15, 19])
    torch.testing.assert_close(d.predict_x0(d.q_sample(x0, t, eps), t, eps), x0, atol=1e-4, rtol=1e-4)


def test_cfg_combine_endpoints_and_batched_guidance():
    ec, eu = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(cfg_combine(eu, ec, 0.0), eu)
    torch.testing.assert_close(cfg_combine(eu, ec, 1.0), ec)
    torch.testing.assert_close(cfg_combine(eu, ec, 3.0), eu + 3 * (ec - eu))
    torch.manual_seed(0)
    net = TinyUNet(UNetConfig(image_size=8, channel_mults=(1, 2), base_channels=8, cond_dim=6)).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # 让输出非零，比较才有意义
    torch.nn.init.normal_(net.null_cond)
    d = GaussianDiffusion(DiffusionConfig(timesteps=10))
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([3, 7]), torch.randn(2, 6)
    with torch.no_grad():
        guided = d.predict_eps(net, x, t, c, guidance_scale=2.5)
        expect = cfg_combine(net(x, t), net(x, t, cond=c), 2.5)
    torch.testing.assert_close(guided, expect, atol=1e-5, rtol=1e-4)


def test_sampler_shapes_and_determinism():
    torch.manual_seed(0)
    net = TinyUNet(UNetConfig(image_size=8, channel_mults=(1, 2), base_channels=8, cond_dim=6))
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    d = GaussianDiffusion(DiffusionConfig(timesteps=8))
    cond = torch.randn(3, 6)
    run = lambda seed, w: d.sample(net, (3, 3, 8, 8), cond=cond, guidance_scale=w,
                                   generator=torch.Generator().manual_seed(seed))
    a, b, c = run(1, 2.0), run(1, 2.0), run(2, 2.0)
    assert a.shape == (3, 3, 8, 8) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    assert (run(1, 0.0) - a).abs().max() > 1e-4  # 引导强度确实改变结果
    with pytest.raises(ValueError, match="cond 的批大小"):
        d.sample(net, (2, 3, 8, 8), cond=cond)


def test_unet_shapes_masks_and_errors():
    net = TinyUNet(UNetConfig(image_size=16, channel_mults=(1, 2, 2), base_channels=8, cond_dim=4))
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    torch.nn.init.normal_(net.null_cond)
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([0, 5]), torch.randn(2, 4)
    assert net(x, t, cond=c).shape == (2, 3, 16, 16)
    # drop_cond=True 的样本与"不给条件"完全相同，False 的样本保持有条件预测
    mixed = net(x, t, cond=c, drop_cond=torch.tensor([True, False]))
    torch.testing.assert_close(mixed[0], net(x, t)[0])
    torch.testing.assert_close(mixed[1], net(x, t, cond=c)[1])
    with pytest.raises(ValueError, match="输入形状"):
        net(torch.randn(2, 3, 32, 32), t, cond=c)
    with pytest.raises(ValueError, match="cond 的形状"):
        net(x, t, cond=torch.randn(2, 5))
    with pytest.raises(ValueError, match="整除"):
        TinyUNet(UNetConfig(image_size=18, channel_mults=(1, 2, 2)))


def test_unet_memory_format_changes_only_rounding():
    """NHWC 与 NCHW 是同一个函数：同一组权重，输出只差浮点舍入，梯度也一样。"""
    torch.manual_seed(0)
    cfg = dict(image_size=16, channel_mults=(1, 2, 2), base_channels=8, cond_dim=4)
    nhwc = TinyUNet(UNetConfig(**cfg, channels_last=True))
    nchw = TinyUNet(UNetConfig(**cfg, channels_last=False))
    torch.nn.init.normal_(nhwc.conv_out.weight, std=0.1)
    nchw.load_state_dict(nhwc.state_dict())
    x, t, c = torch.randn(3, 3, 16, 16), torch.tensor([0, 4, 9]), torch.randn(3, 4)
    a, b = nhwc(x, t, cond=c), nchw(x, t, cond=c)
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert b.is_contiguous() and not a.is_contiguous()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    a.square().mean().backward(); b.square().mean().backward()
    torch.testing.assert_close(nhwc.conv_in.weight.grad, nchw.conv_in.weight.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("conv_first", [True, False])
def test_unet_upsample_conv_resolution(conv_first):
    """先卷积再放大时，上采样层的卷积在低分辨率上算（像素是先放大再卷积的 1/4）。"""
    net = TinyUNet(UNetConfig(image_size=16, channel_mults=(1, 2, 2), base_channels=8, cond_dim=0, groups=4,
                              conv_before_upsample=conv_first))
    seen = []
    for layer in net.upsample:
        for m in layer.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape[-1], out.shape[-1])))
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
    assert out.shape == (2, 3, 16, 16)
    # 两个上采样层：4→8、8→16 像素
    assert seen == ([(4, 4), (8, 8)] if conv_first else [(8, 8), (16, 16)])


@pytest.mark.slow
def test_toy_ddpm_learns_two_moons():
    torch.manual_seed(0)
    data = toy_data_2d(2000, generator=torch.Generator().manual_seed(0))
    d = GaussianDiffusion(DiffusionConfig(timesteps=50, clip_denoised=False))
    net = ToyDenoiser(hidden=128)
    hist = train_diffusion(net, d, data, steps=3000, batch_size=256, lr=2e-3, seed=0)
    first = sum(h["loss"] for h in hist[:20]) / 20
    last = sum(h["loss"] for h in hist[-50:]) / 50
    assert last < 0.7 * first, (first, last)
    samples = d.sample(net, (500, 2), generator=torch.Generator().manual_seed(0))
    nn_dist = torch.cdist(samples, data).min(dim=1).values.median()
    noise_dist = torch.cdist(torch.randn(500, 2), data).min(dim=1).values.median()
    assert nn_dist < 0.04 and nn_dist < 0.5 * noise_dist, (nn_dist, noise_dist)


@pytest.mark.slow
def test_conditional_unet_learns_colours():
    # 两类 8×8 纯色图（红 / 蓝），条件是 one-hot；训练后按条件采样，颜色必须对上
    torch.manual_seed(0)
    red = torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 8, 8)
    blue = torch.tensor([-1.0, -1.0, 1.0])[:, None, None].expand(3, 8, 8)
    x0 = torch.stack([red, blue] * 64) + 0.05 * torch.randn(128, 3, 8, 8)
    cond = torch.eye(2).repeat(64, 1)
    net = TinyUNet(UNetConfig(image_size=8, channel_mults=(1, 2), base_channels=16, cond_dim=2))
    d = GaussianDiffusion(DiffusionConfig(timesteps=50))
    hist = train_diffusion(net, d, x0, cond, steps=400, batch_size=32, lr=2e-3, p_uncond=0.2, seed=0)
    assert sum(h["loss"] for h in hist[-20:]) / 20 < 0.2 * sum(h["loss"] for h in hist[:10]) / 10
    want = torch.eye(2).repeat(8, 1)
    out = d.sample(net, (16, 3, 8, 8), cond=want, guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    mean_rgb = out.mean(dim=(2, 3))  # (16, 3)
    is_red = mean_rgb[:, 0] > mean_rgb[:, 2]
    assert torch.equal(is_red, want[:, 0].bool()), mean_rgb


def test_min_snr_weighting_matches_its_formula():
    # Min-SNR-γ：每个样本的 ε 均方误差乘 min(SNR(t), γ)/SNR(t)，SNR(t) = ᾱ_t/(1 − ᾱ_t)
    d = GaussianDiffusion(DiffusionConfig(timesteps=100))
    ab = d.alpha_bars
    torch.testing.assert_close(d.snr(torch.arange(100)), ab / (1 - ab))
    assert (d.snr(torch.arange(1, 100)) < d.snr(torch.arange(99))).all()  # 随 t 单调下降
    torch.manual_seed(0)
    net = TinyUNet(UNetConfig(image_size=8, channel_mults=(1, 2), base_channels=8, groups=4, cond_dim=0))
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # 零初始化的输出层会让 ε̂ ≡ 0，换成非零
    x0 = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got = d.loss(net, x0, generator=torch.Generator().manual_seed(2), snr_gamma=5.0)
        plain = d.loss(net, x0, generator=torch.Generator().manual_seed(2))
        # 手算：同一个生成器按同样的顺序抽 t 与 ε
        g = torch.Generator().manual_seed(2)
        t = torch.randint(0, 100, (64,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        err = (net(d.q_sample(x0, t, eps), t) - eps).pow(2).mean(dim=(1, 2, 3))
        snr = ab[t] / (1 - ab[t])
        weight = torch.minimum(snr, torch.tensor(5.0, dtype=snr.dtype)) / snr
        torch.testing.assert_close(got, (weight.float() * err).mean())
        torch.testing.assert_close(plain, err.mean())
        assert (weight < 1).any() and (weight == 1).any() and got < plain  # 两段都出现，且确实降了权
        # γ 不小于所有 SNR 时各步等权，就是 L_simple
        big = float(d.snr(torch.tensor([0]))) + 1
        torch.testing.assert_close(d.loss(net, x0, generator=torch.Generator().manual_seed(2), snr_gamma=big), plain)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="snr_gamma"):
            d.loss(net, x0, snr_gamma=bad)


def test_train_diffusion_updates_the_ema_every_step():
    from clipedu.ema import ModelEMA
    torch.manual_seed(0)
    net = ToyDenoiser(hidden=32)
    ema = ModelEMA(net, decay=0.99)
    d = GaussianDiffusion(DiffusionConfig(timesteps=20, clip_denoised=False))
    data = toy_data_2d(256, generator=torch.Generator().manual_seed(0))
    hist = train_diffusion(net, d, data, steps=30, batch_size=32, snr_gamma=5.0, ema=ema, seed=0)
    assert len(hist) == 30 and ema.updates == 30
    diffs = [(a - b).abs().max().item() for a, b in zip(ema.module.parameters(), net.parameters())]
    assert max(diffs) > 0  # 平均后的参数落后于当前参数，但不是初始值
    assert not ema.module.training

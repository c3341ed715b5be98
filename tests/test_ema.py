"""参数 EMA（clipedu/ema.py，第 5 章 sec-time-budget）：公式、缓冲区、检查点与精确续训。"""
import shutil

import pytest
import torch

from clipedu.checkpoint import load_checkpoint, load_model
from clipedu.config import TrainConfig
from clipedu.ema import ModelEMA, ema_decay_at
from clipedu.errors import UsageError
from clipedu.trainer import train
from tiny import tiny_dataset, tiny_train_config


def test_update_is_the_book_formula_step_by_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = ModelEMA(net, decay=0.9)
    ref = [p.detach().clone().double() for p in net.parameters()]
    betas = []
    for n in range(100):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(5, 3))  # 训练模式：BatchNorm 的运行统计量变了
        beta = ema.update(net)
        betas.append(beta)
        # θ̄ ← ρ_n·θ̄ + (1 − ρ_n)·θ，ρ_n = min(ρ, (1 + n)/(10 + n))，用 float64 逐项重算
        assert beta == pytest.approx(min(0.9, (1 + n) / (10 + n)))
        ref = [beta * r + (1 - beta) * p.detach().double() for r, p in zip(ref, net.parameters())]
        for r, q in zip(ref, ema.module.parameters()):
            torch.testing.assert_close(q.double(), r, rtol=1e-5, atol=1e-6)
    assert betas[0] == pytest.approx(0.1) and betas[-1] == 0.9  # 先小后封顶
    # 缓冲区直接复制，不平均
    torch.testing.assert_close(ema.module[1].running_mean, net[1].running_mean)
    assert ema.updates == 100 and not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_is_kept_in_float32_for_bf16_parameters():
    net = torch.nn.Linear(4, 4).to(torch.bfloat16)
    ema = ModelEMA(net, decay=0.999)
    for _ in range(2000):
        ema.update(net)
    assert ema.module.weight.dtype == torch.float32
    with torch.no_grad():
        net.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(net)
    moved = (ema.module.weight - before).abs().mean().item()
    # 增量 (1 − ρ_n)·1 ≈ 0.0045 小于 bf16 在这些权重附近的间隔（约 0.002–0.004），在 float32 里精确
    assert moved == pytest.approx(1 - ema_decay_at(0.999, 2000), rel=1e-3)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_decay_is_a_clear_usage_error(tmp_path, bad):
    with pytest.raises(UsageError, match="ema"):
        TrainConfig(out_dir=str(tmp_path), ema_decay=bad)
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(torch.nn.Linear(2, 2), decay=bad if bad == bad and bad > 0 else 0.0)


def test_decay_schedule_values():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(0.91)
    assert ema_decay_at(0.999, 10**6) == 0.999


def test_training_saves_the_average_and_resumes_exactly(tmp_path):
    data = tiny_dataset(64)
    kw = dict(steps=6, batch_size=8, save_every=3, ema_decay=0.8)
    train(tiny_train_config(tmp_path / "ref", **kw), train_dataset=data)
    ref = load_checkpoint(tmp_path / "ref" / "last.pt")
    ts = ref["train_state"]
    assert ts["ema_updates"] == 6
    # "model" 是平均后的参数，与原始参数不同；load_model 拿到的是平均后的
    diff = [k for k in ts["raw_model"] if not torch.equal(ts["raw_model"][k], ref["model"][k])]
    assert diff, "EMA 的参数应与原始参数不同"
    model, _ = load_model(tmp_path / "ref" / "last.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref["model"][k], rtol=0, atol=0)

    # 第 3 步的检查点放进新目录，续训到第 6 步：原始参数与 EMA 都逐位相同
    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "ref" / "ckpt_step3.pt", tmp_path / "cut" / "ckpt_step3.pt")
    train(tiny_train_config(tmp_path / "cut", resume="latest", **kw), train_dataset=data)
    got = load_checkpoint(tmp_path / "cut" / "last.pt")
    for key in ("model",):
        for k in ref[key]:
            assert torch.equal(ref[key][k], got[key][k]), k
    for k in ts["raw_model"]:
        assert torch.equal(ts["raw_model"][k], got["train_state"]["raw_model"][k]), k
    assert got["train_state"]["ema_updates"] == 6


def test_resume_switching_ema_on_or_off(tmp_path, capsys):
    data = tiny_dataset(64)
    train(tiny_train_config(tmp_path / "a", steps=3, batch_size=8), train_dataset=data)
    plain = load_checkpoint(tmp_path / "a" / "last.pt")
    # 没有 EMA 的检查点，续训时打开 EMA：从续训时的参数开始平均
    train(tiny_train_config(tmp_path / "a", steps=5, batch_size=8, resume="latest", ema_decay=0.9),
          train_dataset=data)
    on = load_checkpoint(tmp_path / "a" / "last.pt")
    assert on["train_state"]["ema_updates"] == 2 and "raw_model" in on["train_state"]
    assert any(not torch.equal(plain["model"][k], on["train_state"]["raw_model"][k]) for k in plain["model"])
    # 带 EMA 的检查点，续训时关掉 EMA：从原始参数接着训练，并说明一句
    capsys.readouterr()
    train(tiny_train_config(tmp_path / "a", steps=6, batch_size=8, resume="latest"), train_dataset=data)
    assert "without ema" in capsys.readouterr().out
    off = load_checkpoint(tmp_path / "a" / "last.pt")
    assert "raw_model" not in off["train_state"] and off["train_state"]["step"] == 6

"""学习率日程跟随时间预算（clipedu.optim.BudgetCosine，见第 5 章 sec-time-budget）。"""
import io

import pytest
import torch

from clipedu.optim import BudgetCosine, build_scheduler, observe_time, warmup_cosine
from clipedu.trainer import train

from tiny import tiny_dataset, tiny_train_config


def test_without_budget_equals_warmup_cosine():
    ref, s = warmup_cosine(10, 110), BudgetCosine(10, 110)
    for step in range(130):
        s.observe(step, 1000.0 + step)  # 没有时间预算时，时钟不起作用
        assert s(step) == pytest.approx(ref(step), abs=1e-12)


def test_budget_anneals_to_zero_when_time_runs_out():
    """步数上限 1000 远未走到，时间到时学习率也要降到 0，并且预热后单调下降。"""
    s = BudgetCosine(warmup_steps=10, total_steps=1000, time_budget=60.0)
    factors = []
    for step in range(200):
        s.observe(step, 0.3 * step)          # 每步 0.3 s：第 200 步时用完 60 s
        factors.append(s(step))
    assert factors[9] == pytest.approx(1.0)
    after = factors[10:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert factors[-1] < 1e-3                 # 只按步数的日程这时仍在峰值的 ~0.9
    assert warmup_cosine(10, 1000)(199) > 0.9
    # 预热后一半的时间过去，余弦正好降到一半
    mid = 10 + (200 - 10) // 2
    assert factors[mid] == pytest.approx(0.5, abs=0.02)


def test_next_step_lr_extrapolates_measured_step_time():
    """LambdaLR 在第 k 步结束时就算第 k+1 步的学习率：用实测的每步用时外推，而不是落后一步。"""
    s = BudgetCosine(warmup_steps=0, total_steps=10_000, time_budget=10.0)
    for step in range(5):
        s.observe(step, 1.0 * step)                # 每步 1 s
    assert s.progress(5) == pytest.approx(0.5)     # 第 5 步开始时应是 5 s，而不是最近观察到的 4 s
    assert s.progress(4) == pytest.approx(0.4)


def test_step_cap_still_wins_when_it_comes_first():
    s = BudgetCosine(warmup_steps=2, total_steps=20, time_budget=1e6)
    for step in range(20):
        s.observe(step, float(step))
    assert s(20) == pytest.approx(0.0) and s(11) == pytest.approx(warmup_cosine(2, 20)(11))


def test_resumed_budget_continues_from_current_lr():
    """续训：新进程的时钟从 0 开始，学习率从原处接着降，不跳回峰值，到新预算结束时为 0。"""
    s = BudgetCosine(warmup_steps=10, total_steps=1000, time_budget=30.0)
    before = warmup_cosine(10, 1000)(500)
    s.observe(500, 0.0)
    assert s(500) == pytest.approx(before)
    s.observe(600, 15.0)
    assert s(600) < before
    s.observe(700, 30.0)
    assert s(700) == pytest.approx(0.0, abs=1e-9)


def test_bad_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="time_budget"):
        BudgetCosine(10, 100, time_budget=-1.0)
    s = BudgetCosine(2, 100, time_budget=0.0)   # 预算 0：train 走完一步就停，日程也不出错
    s.observe(2, 0.0)
    assert s(2) == pytest.approx(0.0)


def test_scheduler_state_dict_is_plain_and_loads_weights_only():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    cfg = tiny_train_config("unused", steps=50, warmup_steps=5, time_budget=10.0)
    sched = build_scheduler(opt, cfg)
    for step in range(8):
        observe_time(sched, step, float(step))
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["last_epoch"] == 8 and "schedule" not in str(state)


def test_budgeted_training_run_ends_with_lr_near_zero(tmp_path):
    """真实的训练循环：步数上限很大，3 秒预算先到，最后一步的学习率已退火到峰值的 10% 以下
    （只按步数的日程这时还在峰值附近）。最后一步开始时离预算还差不到一步的时间，所以不是精确的 0。"""
    torch.set_num_threads(1)
    cfg = tiny_train_config(tmp_path, steps=100_000, batch_size=16, warmup_steps=2, time_budget=3.0)
    history = train(cfg, train_dataset=tiny_dataset(256))
    assert len(history) < 100_000
    assert history[-1]["lr"] < 0.1 * cfg.lr
    assert warmup_cosine(2, 100_000)(len(history)) > 0.99
    peak = max(r["lr"] for r in history)
    assert peak == pytest.approx(cfg.lr)

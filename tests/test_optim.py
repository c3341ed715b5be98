"""build_optimizer：参数分组与 CPU 上的 fused AdamW。"""
import copy

import pytest
import torch

from clipedu.config import TrainConfig
from clipedu.model import create_model
from clipedu.optim import build_optimizer, param_groups


def _grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_cpu_optimizer_is_fused_and_matches_the_reference_adamw():
    """fused 内核只是更快的实现：与 torch 逐个张量的 AdamW（同样的分组与超参数）逐步一致。"""
    torch.manual_seed(0)
    model = create_model("tiny-cpu")
    ref_model = copy.deepcopy(model)
    start = copy.deepcopy(model.state_dict())
    cfg = TrainConfig(lr=2e-3, weight_decay=0.1)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    assert all(group["fused"] for group in opt.param_groups)
    ref = torch.optim.AdamW(param_groups(ref_model, cfg.lr, cfg.weight_decay), lr=cfg.lr,
                            betas=cfg.betas, eps=cfg.eps, foreach=False)
    for step in range(5):
        _grads(model, step)
        _grads(ref_model, step)
        opt.step()
        ref.step()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(p, start[name]), name  # 每个参数都真的更新了


def test_fused_optimizer_state_survives_a_weights_only_round_trip(tmp_path):
    """检查点里的优化器状态是普通张量：weights_only 读回后接着训练，结果与不中断时一致。"""
    torch.manual_seed(1)
    model = create_model("tiny-cpu")
    cfg = TrainConfig()
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    _grads(model, 0)
    opt.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    model2 = create_model("tiny-cpu")
    model2.load_state_dict(state["model"])
    opt2 = build_optimizer(model2, cfg, torch.device("cpu"))
    opt2.load_state_dict(state["opt"])
    for m, o in ((model, opt), (model2, opt2)):
        _grads(m, 1)
        o.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("device", ["meta"])
def test_other_devices_use_the_default_implementation(device):
    model = create_model("tiny-cpu")
    opt = build_optimizer(model, TrainConfig(), torch.device(device))
    assert not any(group["fused"] for group in opt.param_groups)

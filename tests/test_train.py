"""训练引擎：损失下降、日志与汇总、AdamW 分组、日程、温度截断、对比式梯度累积、精度、NaN 处理。"""
import json
import math

import pytest
import torch

from clipedu.config import TrainConfig
from clipedu.model import CLIP
from clipedu.optim import param_groups, warmup_cosine
from clipedu.precision import build_precision
from clipedu.trainer import train
from tiny import tiny_model_config, tiny_train_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """一次 80 步的短训练，多个测试共用它的输出。"""
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    cfg = tiny_train_config(out, steps=80, batch_size=32, lr=2e-3, warmup_steps=5, eval_size=64, eval_every=40)
    return out, train(cfg, train_dataset=data)


@pytest.mark.slow
def test_short_run_clearly_lowers_loss(trained):
    _, history = trained
    first = sum(r["loss"] for r in history[:5]) / 5
    last = sum(r["loss"] for r in history[-5:]) / 5
    assert first > math.log(32) - 0.3          # 起点接近随机猜测 ln(B)
    assert last < first - 0.8, (first, last)


@pytest.mark.slow
def test_log_metrics_and_checkpoint_files(trained):
    out, history = trained
    lines = [json.loads(l) for l in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 81))
    for key in ("step", "loss", "lr", "inv_temperature", "pairs_per_s", "samples_seen"):
        assert key in lines[0]
    assert lines[-1]["samples_seen"] == 80 * 32
    assert "zero_shot_top1_heldout" in lines[39] and "i2t_R@1" in lines[39]   # eval_every=40
    assert [r["loss"] for r in lines] == [r["loss"] for r in history]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 80 and metrics["stopped_by"] == "steps"
    assert 0.0 <= metrics["zero_shot_top1_heldout"] <= 1.0 and metrics["pairs_per_s"] > 0
    assert metrics["bad_samples"]["bad"] == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "tokenizer", "config", "train_state"} <= set(ckpt)
    assert ckpt["train_state"]["step"] == 80 and ckpt["train_state"]["samples_seen"] == 2560


@pytest.mark.slow
def test_lr_follows_warmup_then_cosine(trained):
    _, history = trained
    lrs = [r["lr"] for r in history]
    assert lrs[0] == pytest.approx(2e-3 / 5) and lrs[4] == pytest.approx(2e-3)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))   # 预热后单调下降
    assert lrs[-1] < 2e-3 * 0.01


def test_warmup_cosine_values():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


def test_no_weight_decay_on_gains_biases_embeddings_and_logit_scale():
    model = CLIP(tiny_model_config())
    groups = param_groups(model, lr=1e-3, weight_decay=0.1)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    plain = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    for name in ("logit_scale", "token_embedding.weight", "positional_embedding", "visual.class_embedding",
                 "visual.positional_embedding", "ln_final.weight", "visual.ln_pre.bias"):
        assert name in plain, name
    assert "visual.conv1.weight" in decayed and "text_projection" in decayed
    assert "transformer.resblocks.0.attn.in_proj_weight" in decayed
    assert len(decayed) + len(plain) == sum(1 for _ in model.parameters())


def test_logit_scale_is_clamped_after_each_step(tmp_path, data):
    mc = tiny_model_config()
    mc.max_logit_scale = math.log(10.0)
    mc.init_logit_scale = math.log(50.0)       # 初值越界，第一步后就应被截回
    cfg = tiny_train_config(tmp_path, model=mc, steps=3, batch_size=8)
    history = train(cfg, train_dataset=data)
    assert all(r["inv_temperature"] <= 10.0 + 1e-4 for r in history)


def test_cpu_autocast_bf16_and_pure_bf16_train(tmp_path, data):
    for precision in ("amp_bf16", "bf16"):
        cfg = tiny_train_config(tmp_path / precision, steps=4, batch_size=8, precision=precision)
        history = train(cfg, train_dataset=data)
        assert all(math.isfinite(r["loss"]) for r in history)
        state = torch.load(tmp_path / precision / "last.pt", weights_only=True)["model"]
        want = torch.bfloat16 if precision == "bf16" else torch.float32
        assert state["visual.conv1.weight"].dtype == want


def test_autocast_bf16_really_computes_in_bf16(data):
    model = CLIP(tiny_model_config())
    images, _, _ = data.get_batch(list(range(4)))
    prec = build_precision("amp_bf16", torch.device("cpu"))
    with prec.autocast():
        x = model.encode_image(images, normalize=False)
    assert x.dtype == torch.bfloat16
    assert build_precision("amp_fp16", torch.device("cpu")).scaler is not None
    with pytest.raises(ValueError, match="未知精度"):
        build_precision("fp8", torch.device("cpu"))


class _PoisonedAfter(torch.utils.data.Dataset):
    """前 n_good 次取样正常，之后的图像全是 NaN：第 n_good / 批大小 + 1 步的损失变成 NaN。"""

    def __init__(self, base, n_good):
        self.base, self.n_good, self.calls = base, n_good, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, caption, label = self.base[i]
        self.calls += 1
        return (image if self.calls <= self.n_good else torch.full_like(image, float("nan")),
                caption, label)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data):
    cfg = tiny_train_config(tmp_path, steps=8, batch_size=8, save_every=2)
    with pytest.raises(FloatingPointError, match="第 5 步的损失为 nan"):
        train(cfg, train_dataset=_PoisonedAfter(data, n_good=4 * 8))
    good = torch.load(tmp_path / "ckpt_step4.pt", weights_only=True)
    assert good["train_state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert not (tmp_path / "last.pt").exists()


def test_batch_not_divisible_fails_before_training(tmp_path, data):
    cfg = tiny_train_config(tmp_path / "x", steps=2, batch_size=10, accum_steps=4)
    with pytest.raises(ValueError, match="不能被"):
        train(cfg, train_dataset=data)
    assert not (tmp_path / "x" / "log.jsonl").exists()


def test_lock_image_freezes_visual_tower(tmp_path, data):
    cfg = tiny_train_config(tmp_path, steps=3, batch_size=8, lock_image=True, grad_checkpointing=True)
    train(cfg, train_dataset=data)
    torch.manual_seed(cfg.seed)
    init = CLIP(tiny_model_config()).state_dict()
    after = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert torch.equal(init["visual.conv1.weight"], after["visual.conv1.weight"])
    assert not torch.equal(init["text_projection"], after["text_projection"])


def test_time_budget_and_tensorboard(tmp_path, data):
    cfg = tiny_train_config(tmp_path, steps=50, batch_size=8, time_budget=0.0, tensorboard=True)
    history = train(cfg, train_dataset=data)
    assert len(history) == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped_by"] == "time_budget"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_compile_keeps_raw_module_names(tmp_path, data):
    from clipedu.checkpoint import training_checkpoint
    from clipedu.trainer import build_state
    state, _, _ = build_state(tiny_train_config(tmp_path, compile=True), data)
    assert state.model is not state.raw_model          # 前向用编译后的模块
    keys = training_checkpoint(state)["model"].keys()
    assert "logit_scale" in keys and not any(k.startswith(("_orig_mod.", "module.")) for k in keys)


def test_shapes_default_dataset_via_config(tmp_path):
    cfg = TrainConfig(preset="tiny-cpu", out_dir=str(tmp_path), steps=2, batch_size=8, eval_size=0,
                      progress=False, device="cpu")
    history = train(cfg)
    assert len(history) == 2 and history[-1]["samples_seen"] == 16


def test_clipedu_train_is_the_function_whatever_the_import_order():
    import inspect

    import clipedu.trainer
    import clipedu
    assert inspect.isfunction(clipedu.train) and clipedu.train is clipedu.trainer.train
    with pytest.raises(TypeError, match="TrainConfig"):
        clipedu.train({"steps": 1})


@pytest.mark.parametrize("env, needle", [
    ({"WORLD_SIZE": "2"}, "缺少环境变量"),
    ({"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "RANK=5"),
    ({"WORLD_SIZE": "zwei"}, "正整数"),
])
def test_inconsistent_launch_env_fails_before_training(tmp_path, data, monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=needle):
        train(tiny_train_config(tmp_path / "x", steps=1, batch_size=8), train_dataset=data)
    assert not (tmp_path / "x").exists()


def test_init_from_checkpoint_loads_weights_and_tokenizer(tmp_path, data):
    train(tiny_train_config(tmp_path / "a", steps=3, batch_size=8), train_dataset=data)
    # lr=0：只看权重是否原样载入（AdamW 的衰减也乘以 lr，所以参数不动）
    cfg = tiny_train_config(tmp_path / "b", steps=1, batch_size=8, lr=0.0, init_from=str(tmp_path / "a" / "last.pt"))
    train(cfg, train_dataset=data)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["train_state"]["step"] == 1 and b["tokenizer"] == a["tokenizer"]


def test_train_on_real_csv_and_wds_counts_bad_samples(tmp_path):
    """真实数据路径：csv（map 式，坏图被替换并计数）与 wds（流式）都能训练，坏样本写进 metrics.json。"""
    from realdata_fixtures import png_bytes, write_csv_folder
    from clipedu.data.shard import write_shards
    rows = [(f"{i}.png", f"第{i}张图", png_bytes((10 * i, 200 - 5 * i, 0))) for i in range(24)]
    rows.append(("bad.png", "坏图", b"not an image"))
    csv_path = write_csv_folder(tmp_path / "src", rows)
    cfg = tiny_train_config(tmp_path / "csv", steps=4, batch_size=8, dataset="csv", data_path=str(csv_path),
                            max_bad_fraction=0.5)
    train(cfg)
    bad = json.loads((tmp_path / "csv" / "metrics.json").read_text())["bad_samples"]
    assert bad["bad"] >= 1 and "corrupt_image" in bad["by_reason"]
    shards = write_shards(str(csv_path), str(tmp_path / "shards"), shard_size=10, max_bad_fraction=0.5)
    cfg = tiny_train_config(tmp_path / "wds", steps=3, batch_size=8, dataset="wds", data_path=shards["pattern"])
    history = train(cfg)
    assert len(history) == 3 and all(math.isfinite(r["loss"]) for r in history)

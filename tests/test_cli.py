"""命令行：真实入口 ``python -m clipedu train/eval`` 的冒烟运行与错误信息（见第 5 章 sec-code-cli）。"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipedu.cli import build_parser, config_from_args, main
from clipedu.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "clipedu", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_flags_map_onto_train_config():
    args = build_parser().parse_args([
        "train", "--preset", "small", "--out", "o", "--steps", "7", "--time-budget", "3.5", "--batch-size", "64",
        "--lr", "0.01", "--seed", "3", "--device", "cpu", "--precision", "amp_bf16", "--accum-steps", "2",
        "--grad-checkpointing", "--compile", "--save-every", "5", "--keep-last", "2", "--resume", "latest",
        "--tensorboard", "--local-loss", "--no-gather-with-grad", "--eval-every", "10", "--dataset", "csv",
        "--data-path", "d.tsv", "--init-from", "w.pt", "--lock-image", "--strict",
    ])
    cfg = config_from_args(args)
    assert (cfg.preset, cfg.out_dir, cfg.steps, cfg.time_budget, cfg.batch_size) == ("small", "o", 7, 3.5, 64)
    assert (cfg.lr, cfg.seed, cfg.device, cfg.precision, cfg.accum_steps) == (0.01, 3, "cpu", "amp_bf16", 2)
    assert cfg.grad_checkpointing and cfg.compile and cfg.tensorboard and cfg.local_loss and cfg.lock_image
    assert cfg.strict and not cfg.gather_with_grad
    assert (cfg.save_every, cfg.keep_last, cfg.resume, cfg.eval_every) == (5, 2, "latest", 10)
    assert (cfg.dataset, cfg.data_path, cfg.init_from) == ("csv", "d.tsv", "w.pt")
    # 没给出的项保持 TrainConfig 默认值
    default = config_from_args(build_parser().parse_args(["train"]))
    assert default.lr == TrainConfig().lr and default.out_dir == "runs/tiny-cpu"
    assert default.gather_with_grad and not default.compile


def test_time_budget_fills_the_budget_recipe_for_flags_not_given():
    """限时训练 tiny-cpu：没给出的批大小、权重衰减、预热步数用 BUDGET_RECIPES；给出的照用户的；
    不限时、别的预设、别的数据或微调时一项也不补。"""
    from clipedu.cli import budget_recipe
    from clipedu.config import BUDGET_RECIPES

    cfg = lambda *a: config_from_args(build_parser().parse_args(["train", *a]))
    recipe = BUDGET_RECIPES["tiny-cpu"]
    budget = cfg("--time-budget", "60")
    assert (budget.batch_size, budget.weight_decay, budget.warmup_steps) == (
        recipe["batch_size"], recipe["weight_decay"], recipe["warmup_steps"])
    assert budget.lr == TrainConfig.lr  # 配方之外的项不动
    mine = cfg("--time-budget", "60", "--batch-size", "32", "--warmup-steps", "5")
    assert (mine.batch_size, mine.weight_decay, mine.warmup_steps) == (32, recipe["weight_decay"], 5)
    for args in ([], ["--steps", "100"], ["--time-budget", "60", "--preset", "small"],
                 ["--time-budget", "60", "--dataset", "digits"], ["--time-budget", "60", "--init-from", "w.pt"]):
        c = cfg(*args)
        assert (c.batch_size, c.weight_decay, c.warmup_steps) == (
            TrainConfig.batch_size, TrainConfig.weight_decay, TrainConfig.warmup_steps), args
    assert budget_recipe({"time_budget": 60.0, "weight_decay": 0.1}) == {
        k: v for k, v in recipe.items() if k != "weight_decay"}


def test_budget_recipe_is_announced_and_used(tmp_path, capsys):
    """真实入口：预算 0 秒（走一步就停），开头打印补上的配方，保存的配置里就是这些值。"""
    out = tmp_path / "run"
    rc = main(["train", "--time-budget", "0", "--out", str(out), "--eval-size", "0", "--no-progress",
               "--device", "cpu", "--batch-size", "16"])
    assert rc == 0
    said = capsys.readouterr().out
    assert "限时训练的配方" in said and "--weight-decay 0.3" in said and "--batch-size" not in said
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["train_config"]
    assert (saved["batch_size"], saved["weight_decay"], saved["warmup_steps"]) == (16, 0.3, 30)


@pytest.mark.slow
def test_cli_train_then_eval_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    r = _run("train", "--preset", "tiny-cpu", "--out", str(out), "--steps", "3", "--batch-size", "16",
             "--eval-size", "40", "--device", "cpu", "--no-progress", "--save-every", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"last.pt", "metrics.json", "log.jsonl", "ckpt_step2.pt"} <= {p.name for p in out.iterdir()}
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    # eval 在本进程里调用同一个 main()，省一次启动 Python 的时间
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", "--eval-size", "40", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("zero_shot_top1_heldout", "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@10"):
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--checkpoint", "{tmp}/missing.pt", "--json"], "找不到检查点"),
    (["train", "--out", "{tmp}/x", "--batch-size", "30", "--accum-steps", "4", "--steps", "1"], "4 的倍数"),
    (["train", "--preset", "no-such-model", "--out", "{tmp}/y", "--steps", "1"], "未知预设"),
    (["train", "--resume", "{tmp}/gone.pt", "--out", "{tmp}/z", "--steps", "1"], "找不到检查点"),
    (["train", "--precision", "fp8", "--out", "{tmp}/w", "--steps", "1", "--device", "cpu"], "未知精度"),
])
def test_cli_errors_are_clear_and_chinese(tmp_path, capsys, argv, needle):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("错误：") and needle in err

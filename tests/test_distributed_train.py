"""torchrun 两进程（gloo，CPU）与单进程同一全局批：逐步损失与最终参数一致（见第 5 章 sec-scale-up）。"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipedu.checkpoint import load_checkpoint
from clipedu.trainer import train
from tiny import tiny_dataset, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "_train_worker.py")
STEPS, BATCH = 6, 16


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    common = ["--steps", str(STEPS), "--batch-size", str(BATCH)]
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            WORKER, "--out", str(out / "ddp"), "--variants", "plain,local,accum", *common],
                           env={**_env(), "TMPDIR": str(out)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # 单进程参照在本进程里跑（与 torchrun 同时进行，省一次启动 Python 的时间）
    torch.set_num_threads(1)
    train(tiny_train_config(out / "single" / "plain", steps=STEPS, batch_size=BATCH),
          train_dataset=tiny_dataset())
    _, err = ddp.communicate(timeout=240)
    assert ddp.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "local", "accum"])
def test_ddp_matches_single_process(runs, variant):
    single, ddp = runs / "single" / "plain", runs / "ddp" / variant
    ref_losses, ddp_losses = _losses(single), _losses(ddp)
    assert len(ref_losses) == len(ddp_losses) == STEPS
    torch.testing.assert_close(torch.tensor(ddp_losses), torch.tensor(ref_losses), rtol=0, atol=1e-5)
    a, b = load_checkpoint(single / "last.pt")["model"], load_checkpoint(ddp / "last.pt")["model"]
    assert a.keys() == b.keys()  # 没有 module. 前缀：保存的是未包装的模型
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # 参数确实动了，比较才有意义
    assert ref_losses[0] != ref_losses[-1]


@pytest.mark.slow
def test_ddp_only_rank0_writes_and_records_world_size(runs):
    ddp = runs / "ddp" / "plain"
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS
    assert load_checkpoint(ddp / "last.pt")["train_state"]["world_size"] == 2
    assert len(load_checkpoint(ddp / "last.pt")["train_state"]["rng"]) == 2  # 两个进程的随机数状态

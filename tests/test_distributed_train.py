"""torchrun 两进程（gloo，CPU）与单进程同一全局批：逐步损失与最终参数一致（见第 5 章 sec-scale-up）。"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipedu.checkpoint import load_checkpoint

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
    subprocess.run([sys.executable, WORKER, "--out", str(out / "single"), *common],
                   check=True, env=_env(), timeout=120, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        WORKER, "--out", str(out / "ddp"), "--variants", "plain,local,accum", *common],
                       env=_env(), timeout=180, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
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


def test_ddp_only_rank0_writes_and_records_world_size(runs):
    ddp = runs / "ddp" / "plain"
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS
    assert load_checkpoint(ddp / "last.pt")["train_state"]["world_size"] == 2
    assert len(load_checkpoint(ddp / "last.pt")["train_state"]["rng"]) == 2  # 两个进程的随机数状态

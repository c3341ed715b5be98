"""检查点：原子写入、安全读取、配置不匹配、磁盘满、SIGKILL 后精确续训（见第 5 章 sec-code-checkpoint）。"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipedu.checkpoint import (find_latest, load_checkpoint, load_model, load_state_dict_checked,
                                rotate_checkpoints, save_checkpoint)
from clipedu.model import CLIP
from tiny import tiny_dataset, tiny_model_config, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "_train_worker.py")


def test_save_load_roundtrip_and_no_temp_files(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"step": 3, "name": "红色的圆形", "t": (1, 2)}}
    path = save_checkpoint(obj, tmp_path / "sub" / "a.pt")
    back = load_checkpoint(path)
    assert torch.equal(back["w"], obj["w"]) and back["meta"] == obj["meta"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.pt"]


class _Payload:
    """反序列化时会执行 os.system 的恶意对象。"""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Payload(marker)}, evil)
    with pytest.raises(ValueError, match="拒绝加载"):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match="拒绝加载"):
        load_model(evil)
    assert not marker.exists()


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="找不到检查点"):
        load_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint({"w": torch.randn(1000)}, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="损坏或被截断"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "junk.pt")


def test_mismatched_config_names_keys_and_shapes():
    small = CLIP(tiny_model_config())
    other_cfg = tiny_model_config()
    other_cfg.embed_dim = 48                    # 投影维度不同 → 形状不一致
    other_cfg.text.layers = 2                   # 多一层 → 缺少的键
    other = CLIP(other_cfg)
    with pytest.raises(ValueError) as err:
        load_state_dict_checked(other, small.state_dict())
    msg = str(err.value)
    assert "text_projection" in msg and "(64, 32)" in msg and "(64, 48)" in msg
    assert "transformer.resblocks.1" in msg and "不匹配" in msg


def test_out_of_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"w": torch.ones(3)}, tmp_path / "last.pt")

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # 临时文件已清理


def test_rotate_and_find_latest(tmp_path):
    for step in (2, 4, 6, 8, 10):
        save_checkpoint({"train_state": {"step": step}}, tmp_path / f"ckpt_step{step}.pt")
    removed = rotate_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["ckpt_step2.pt", "ckpt_step4.pt", "ckpt_step6.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ckpt_step10.pt", "ckpt_step8.pt"]
    (tmp_path / "ckpt_step12.pt").write_bytes(b"corrupt")  # 写坏的最新文件被跳过
    assert find_latest(tmp_path).name == "ckpt_step10.pt"


def test_find_latest_reads_names_not_tensors(tmp_path, monkeypatch):
    """只看文件名与文件尾：不调用 torch.load；last.pt 比所有按步检查点新时取它。"""
    save_checkpoint({"train_state": {"step": 4}}, tmp_path / "ckpt_step4.pt")
    save_checkpoint({"train_state": {"step": 9}}, tmp_path / "ckpt_step9.pt")
    data = (tmp_path / "ckpt_step9.pt").read_bytes()
    (tmp_path / "ckpt_step11.pt").write_bytes(data[: len(data) // 2])  # 被截断：跳过
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("find_latest 不应读张量"))
    assert find_latest(tmp_path).name == "ckpt_step9.pt"
    last = save_checkpoint({"train_state": {"step": 10}}, tmp_path / "last.pt")
    assert find_latest(tmp_path) == last            # 运行结束时写的 last.pt 最新
    older = (tmp_path / "ckpt_step9.pt").stat().st_mtime_ns
    os.utime(last, ns=(older - 10**9, older - 10**9))
    assert find_latest(tmp_path).name == "ckpt_step9.pt"  # 续训又存了更新的按步检查点
    assert find_latest(tmp_path / "empty") is None


def _losses(run_dir):
    return [json.loads(l)["loss"] for l in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["--steps", "10", "--batch-size", "8", "--save-every", "3", "--delay", "0.004"]
    ref = subprocess.Popen([sys.executable, WORKER, "--out", str(tmp_path / "ref"), *args], env=env)
    victim = subprocess.Popen([sys.executable, WORKER, "--out", str(tmp_path / "cut"), *args], env=env)
    ckpt6 = tmp_path / "cut" / "plain" / "ckpt_step6.pt"
    deadline = time.time() + 120
    while not ckpt6.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    cut = tmp_path / "cut" / "plain"
    assert not (cut / "last.pt").exists(), "进程应在训练中途被杀"
    subprocess.run([sys.executable, WORKER, "--out", str(tmp_path / "cut"), *args, "--resume", "latest"],
                   env=env, check=True, timeout=120)
    assert ref.wait(timeout=120) == 0
    a = load_checkpoint(tmp_path / "ref" / "plain" / "last.pt")
    b = load_checkpoint(cut / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["train_state"]["step"] == b["train_state"]["step"] == 10
    assert _losses(tmp_path / "ref" / "plain") == _losses(cut)
    assert [json.loads(l)["step"] for l in (cut / "log.jsonl").read_text().splitlines()] == list(range(1, 11))
    # 优化器状态也一致（续训恢复了 Adam 的一、二阶矩）
    sa, sb = a["train_state"]["optimizer"]["state"], b["train_state"]["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_load_model_returns_model_and_tokenizer(tmp_path):
    from clipedu.trainer import train
    train(tiny_train_config(tmp_path, steps=2, batch_size=8), train_dataset=tiny_dataset(64))
    model, tok = load_model(tmp_path / "last.pt")
    assert isinstance(model, CLIP) and not model.training
    assert tok.context_length == 16
    feats = model.encode_text(tok(["红色的圆形"]))
    assert feats.shape == (1, 32)

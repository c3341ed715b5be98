"""按配置与种子寻址的模型缓存（clipedu.model_cache）：第二次不训练、结果逐位相同、只存安全格式、并行时只训练一次。"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clipedu.model_cache as mc
from clipedu.checkpoint import load_model

from tiny import tiny_train_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(mc.CACHE_ENV, str(tmp_path / "cache"))
    torch.set_num_threads(1)
    return tmp_path / "cache"


def _cfg(out, **kw):
    base = dict(steps=4, batch_size=8, eval_size=0)
    base.update(kw)
    return tiny_train_config(out, **base)


def test_key_ignores_output_settings_but_not_training_settings(tmp_path):
    a = mc.cache_key(_cfg(tmp_path / "a"))
    assert a == mc.cache_key(_cfg(tmp_path / "b", progress=True, log_every=5))
    assert a != mc.cache_key(_cfg(tmp_path / "a", seed=1))
    assert a != mc.cache_key(_cfg(tmp_path / "a", steps=5))
    assert a != mc.cache_key(_cfg(tmp_path / "a"), data_key="my-data")


def test_second_call_restores_without_training(tmp_path, cache, monkeypatch):
    first = mc.train_cached(_cfg(tmp_path / "run1"))
    entry = cache / mc.cache_key(_cfg(tmp_path / "x"))
    assert sorted(p.name for p in entry.iterdir()) == ["history.json", "meta.json", "metrics.json",
                                                       "model.safetensors"]

    def no_training(*a, **k):
        raise AssertionError("应从缓存还原，不应重新训练")

    monkeypatch.setattr(mc, "train", no_training)
    second = mc.train_cached(_cfg(tmp_path / "run2"))
    assert second == first
    m1, _ = load_model(tmp_path / "run1" / "last.pt")
    m2, tok = load_model(tmp_path / "run2" / "last.pt")
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    log = [json.loads(line) for line in (tmp_path / "run2" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert log == first and tok.context_length == m2.config.text.context_length
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text(encoding="utf-8")) for r in ("run1", "run2")]
    assert metrics[0] == metrics[1] and metrics[1]["steps"] == 4


def test_time_budget_stops_are_not_cached(tmp_path, cache):
    mc.train_cached(_cfg(tmp_path / "run", steps=100_000, time_budget=0.5, eval_size=0))
    assert not cache.exists() or not [p for p in cache.iterdir() if p.is_dir()]


def test_clear_errors_for_uncacheable_runs(tmp_path, cache):
    with pytest.raises(ValueError, match="data_key"):
        mc.train_cached(_cfg(tmp_path / "r"), train_dataset=[1, 2, 3])
    with pytest.raises(ValueError, match="resume"):
        mc.train_cached(_cfg(tmp_path / "r", resume="latest"))
    with pytest.raises(TypeError, match="TrainConfig"):
        mc.train_cached({"steps": 3})


_TWO_PROCS = """
import sys, clipedu.model_cache as mc
sys.path.insert(0, sys.argv[2])
from tiny import tiny_train_config
mc.train_cached(tiny_train_config(sys.argv[1], steps=6, batch_size=8, eval_size=0))
"""


@pytest.mark.slow
def test_parallel_callers_train_once(tmp_path, cache):
    """两个进程同时要同一个模型（CI 里并行执行的两个笔记本）：一个训练，另一个等它训完再从缓存还原。"""
    env = {**os.environ, mc.CACHE_ENV: str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    tests_dir = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCS, str(tmp_path / f"run{i}"), tests_dir], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("从模型缓存还原" in out for out in outs) == 1, outs
    logs = [(tmp_path / f"run{i}" / "log.jsonl").read_text(encoding="utf-8") for i in range(2)]
    assert logs[0] == logs[1]


@pytest.mark.parametrize("damage", ["flip_weights", "truncate_history", "drop_meta_hash"])
def test_damaged_entry_is_detected_and_retrained(tmp_path, cache, capsys, damage):
    """safetensors 没有校验和：翻转权重中间的一个字节也能读。meta.json 的 SHA-256 发现它，删掉条目重新训练。"""
    first = mc.train_cached(_cfg(tmp_path / "run1"))
    entry = cache / mc.cache_key(_cfg(tmp_path / "x"))
    if damage == "flip_weights":
        path = entry / "model.safetensors"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate_history":
        path = entry / "history.json"
        path.write_bytes(path.read_bytes()[:10])
    else:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        del meta["sha256"]
        (entry / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    capsys.readouterr()
    again = mc.train_cached(_cfg(tmp_path / "run2"))
    assert "corrupt cache entry" in capsys.readouterr().out
    timing = {"pairs_per_s", "time_s"}  # 只有用时不同
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing} for r in h]  # noqa: E731
    assert strip(again) == strip(first)  # 重新训练，损失与第一次逐位相同
    m1, _ = load_model(tmp_path / "run1" / "last.pt")
    m2, _ = load_model(tmp_path / "run2" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert mc._read_entry(entry)[1] is None  # 新条目完好


def test_key_follows_the_code(tmp_path, monkeypatch):
    """git pull 之后训练代码变了：键随之改变，旧代码训练出的模型不会被还原。"""
    digest = mc.code_digest()
    assert len(digest) == 64 and digest == mc.code_digest()
    before = mc.cache_key(_cfg(tmp_path / "a"))
    monkeypatch.setattr(mc, "code_digest", lambda: "0" * 64)
    assert mc.cache_key(_cfg(tmp_path / "a")) != before


def test_prune_keeps_recent_busy_and_foreign(tmp_path, cache):
    """只留最近用过的几个条目；正在被别的进程使用的、不是本模块写的、刚写到一半的都不动。"""
    import time

    cache.mkdir(parents=True)
    now = time.time()
    for i in range(6):  # e0 最旧 … e5 最新
        entry = cache / f"e{i}"
        entry.mkdir()
        (entry / "meta.json").write_text("{}", encoding="utf-8")
        os.utime(entry, (now - 1000 + i, now - 1000 + i))
    foreign = cache / "notes"
    foreign.mkdir()
    old_tmp, new_tmp = cache / ".e9.old", cache / ".e9.new"
    old_tmp.mkdir()
    new_tmp.mkdir()
    os.utime(old_tmp, (now - 7200, now - 7200))
    holder = subprocess.Popen(  # 另一个进程持着 e1 的锁（正在还原它）
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('ok', flush=True); sys.stdin.read()", str(cache / "e1.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        removed = mc.prune(max_entries=3)
    finally:
        holder.communicate("", timeout=60)
    assert sorted(removed) == ["e0", "e2"]
    left = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert left == [".e9.new", "e1", "e3", "e4", "e5", "notes"]
    assert mc.prune(max_entries=3) == ["e1"]  # 锁放开之后


def test_restoring_counts_as_use(tmp_path, cache):
    """还原会更新条目的时间：常用的模型不会因为“存得早”被清理掉。"""
    mc.train_cached(_cfg(tmp_path / "run1"))
    entry = cache / mc.cache_key(_cfg(tmp_path / "x"))
    os.utime(entry, (1, 1))
    mc.train_cached(_cfg(tmp_path / "run2"))
    assert entry.stat().st_mtime > 1e9

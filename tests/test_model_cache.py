"""按配置与种子寻址的模型缓存（clipedu.model_cache）：第二次不训练、结果逐位相同、只存安全格式。"""
import json

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
    assert not cache.exists() or not any(cache.iterdir())


def test_clear_errors_for_uncacheable_runs(tmp_path, cache):
    with pytest.raises(ValueError, match="data_key"):
        mc.train_cached(_cfg(tmp_path / "r"), train_dataset=[1, 2, 3])
    with pytest.raises(ValueError, match="resume"):
        mc.train_cached(_cfg(tmp_path / "r", resume="latest"))
    with pytest.raises(TypeError, match="TrainConfig"):
        mc.train_cached({"steps": 3})

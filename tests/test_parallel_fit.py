"""几个模型同时训练（clipedu/labs/parallel_fit.py）：结果与逐个单线程训练逐位相同，线程数恢复，出错或中断时不留后台线程。"""
import _thread
import threading
import time

import pytest
import torch

from clipedu.labs.fusion import FUSION_MODELS, FusionConfig, fit_classifier, fit_classifiers
from clipedu.labs.parallel_fit import fit_in_threads
from clipedu.tokenizer import ChineseTokenizer

SMALL = FusionConfig(image_size=16, patch_size=4, width=32, heads=2, layers=1, context_length=12, num_answers=3)


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = ChineseTokenizer()
    words = ["红", "蓝", "绿"]
    asked = torch.randint(0, 3, (n,), generator=g)
    tokens = tok([f"是{words[a]}色吗？" for a in asked.tolist()], 12)
    return torch.randn(n, 3, 16, 16, generator=g), tokens, torch.randint(0, 3, (n,), generator=g)


def _models():
    out = {}
    for name in ("early", "late", "hybrid"):
        torch.manual_seed(0)
        out[name] = FUSION_MODELS[name](SMALL)
    return out


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_same_bits_as_one_thread_in_turn(restore_threads):
    images, tokens, labels = _data()
    kw = dict(steps=6, batch_size=16, lr=3e-3, seed=3)
    torch.set_num_threads(1)
    ref = _models()
    ref_hist = {n: fit_classifier(m, (images, tokens), labels, **kw) for n, m in ref.items()}
    torch.set_num_threads(2)
    par = _models()
    par_hist = fit_classifiers(par, (images, tokens), labels, **kw)
    one = _models()
    one_hist = fit_classifiers(one, (images, tokens), labels, max_workers=1, **kw)  # 逐个、1 线程
    assert {k: [h["loss"] for h in v] for k, v in one_hist.items()} == {
        k: [h["loss"] for h in v] for k, v in ref_hist.items()}
    assert list(par_hist) == ["early", "late", "hybrid"]
    for name in ref:
        assert [h["loss"] for h in par_hist[name]] == [h["loss"] for h in ref_hist[name]], name
        for (k, a), b in zip(ref[name].state_dict().items(), par[name].state_dict().values()):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name}.{k}")
    assert torch.get_num_threads() == 2  # 恢复原来的线程数
    last = par_hist["late"][-1]
    assert 0 < last["cpu"] and 0 < last["time"]


def test_stop_event_ends_fit_classifier_early():
    images, tokens, labels = _data(32)
    stop = threading.Event()
    stop.set()
    torch.manual_seed(0)
    hist = fit_classifier(FUSION_MODELS["late"](SMALL), (images, tokens), labels, steps=50, stop=stop)
    assert hist == []


def _waiter(seen: dict, name: str, limit: float = 20.0):
    def job(stop):
        t0 = time.monotonic()
        while not stop.is_set() and time.monotonic() - t0 < limit:
            time.sleep(0.005)
        seen[name] = stop.is_set()
        return name
    return job


def test_an_error_stops_the_other_jobs(restore_threads):
    torch.set_num_threads(2)
    seen = {}

    def bad(stop):
        raise ValueError("坏任务")

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="坏任务"):
        fit_in_threads({"slow": _waiter(seen, "slow"), "bad": bad})
    assert seen == {"slow": True}  # 看到了 stop，而不是等满 20 秒
    assert time.monotonic() - t0 < 10
    assert torch.get_num_threads() == 2


def test_interrupt_while_waiting_stops_the_jobs(restore_threads):
    seen = {}

    def interrupter(stop):
        _thread.interrupt_main()  # 相当于在笔记本里按“中断内核”
        return _waiter(seen, "interrupter")(stop)

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fit_in_threads({"a": _waiter(seen, "a"), "interrupter": interrupter})
    assert seen == {"a": True, "interrupter": True}
    assert time.monotonic() - t0 < 10
    assert torch.get_num_threads() == restore_threads


def test_results_keep_job_order_and_empty_is_fine():
    jobs = {k: (lambda stop, k=k: k * 2) for k in ("c", "a", "b", "d", "e")}
    assert fit_in_threads(jobs, max_workers=2) == {"c": "cc", "a": "aa", "b": "bb", "d": "dd", "e": "ee"}
    assert fit_in_threads({}) == {}


def test_models_that_share_parameters_are_refused():
    images, tokens, labels = _data(16)
    m = FUSION_MODELS["late"](SMALL)
    with pytest.raises(ValueError, match="共用参数"):
        fit_classifiers({"a": m, "b": m}, (images, tokens), labels, steps=1)

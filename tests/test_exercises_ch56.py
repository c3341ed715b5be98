"""第 5、6 章的练习检查器：参考解通过；典型错误解不通过，且命中对应提示（clipedu.exercises）。"""
import json
import math

import pytest
import torch

from clipedu.exercises import (check_log_reader, check_lr_schedule, check_near_duplicates, check_recall_at_k,
                               check_topk_search)
from clipedu.optim import warmup_cosine
from clipedu.run_log import read_log


def norm(x):
    return x / x.norm(dim=-1, keepdim=True)


# ---- 参考解 ----
def good_log_reader(path):
    out = []
    for line in open(path, encoding="utf-8"):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def good_lr(step, warmup, total):
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def good_topk(query, gallery, k):
    return (norm(gallery) @ norm(query)).topk(k).indices


def good_recall(text_emb, image_emb, t2i, k):
    sim = text_emb @ image_emb.T
    rank = (sim > sim.gather(1, t2i[:, None])).sum(dim=1) + 1
    return (rank <= k).float().mean().item()


def good_dups(emb, threshold):
    sim = norm(emb) @ norm(emb).T
    n = len(emb)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if sim[i, j] >= threshold]


@pytest.mark.parametrize("checker, fn", [
    (check_log_reader, good_log_reader),
    (check_log_reader, read_log),                   # 库里的实现本身也是一个参考解
    (check_lr_schedule, good_lr),
    (check_lr_schedule, lambda s, w, t: warmup_cosine(w, t)(s)),
    (check_topk_search, good_topk),
    (check_recall_at_k, good_recall),
    (check_near_duplicates, good_dups),
])
def test_reference_solutions_pass(checker, fn, capsys):
    result = checker(fn)
    assert result and not result.diagnoses
    out = capsys.readouterr().out
    assert "通过 3/3" in out and "全部通过" in out


def _naive_reader(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def _drops_first(path):
    return good_log_reader(path)[1:]


@pytest.mark.parametrize("wrong, key", [(_naive_reader, "no_skip"), (_drops_first, "count"),
                                        (lambda p: {"loss": []}, "type")])
def test_log_reader_wrong_solutions(wrong, key):
    result = check_log_reader(wrong, verbose=False)
    assert not result and key in result.diagnoses


@pytest.mark.parametrize("wrong, key", [
    (lambda s, w, t: s / w if s < w else good_lr(s, w, t), "warmup_from_zero"),
    (lambda s, w, t: good_lr(s, w, t) if s < w else max(0.0, 1 - (s - w) / max(1, t - w)), "linear_decay"),
    (lambda s, w, t: good_lr(s, w, t) if s < w else 0.5 * (1 + math.cos(math.pi * (s - w) / max(1, t - w))),
     "no_clamp"),
    (lambda s, w, t: good_lr(s, w, t) if s < w else 0.5 * (1 + math.cos(math.pi * min(1.0, s / t))),
     "cosine_from_zero"),
])
def test_lr_wrong_solutions(wrong, key):
    result = check_lr_schedule(wrong, verbose=False)
    assert not result and key in result.diagnoses


@pytest.mark.parametrize("wrong, key", [
    (lambda q, g, k: (norm(g) @ norm(q)).topk(k, largest=False).indices, "ascending"),
    (lambda q, g, k: (g @ q).topk(k).indices, "no_normalize"),
    (lambda q, g, k: (norm(g) @ norm(q)).topk(k).values, "values"),
    (lambda q, g, k: (norm(g) @ norm(q)).argsort(descending=True), "not_truncated"),
])
def test_topk_wrong_solutions(wrong, key):
    result = check_topk_search(wrong, verbose=False)
    assert not result and key in result.diagnoses


def _recall_off_by_one(text_emb, image_emb, t2i, k):
    sim = text_emb @ image_emb.T
    rank = (sim > sim.gather(1, t2i[:, None])).sum(dim=1) + 1
    return (rank < k).float().mean().item()


@pytest.mark.parametrize("wrong, key", [
    (_recall_off_by_one, "off_by_one"),
    (lambda t, i, m, k: 100 * good_recall(t, i, m, k), "percent"),
])
def test_recall_wrong_solutions(wrong, key):
    result = check_recall_at_k(wrong, verbose=False)
    assert not result and key in result.diagnoses


def test_recall_checker_spots_wrong_direction():
    """一图一文时，图→文的 R@k 与文→图的通常不同；检查器应认出“算反了方向”。"""
    from clipedu.evaluate import retrieval_metrics

    def i2t(text_emb, image_emb, t2i, k):
        return retrieval_metrics(image_emb, text_emb, t2i, ks=(k,))[f"i2t_R@{k}"]
    result = check_recall_at_k(i2t, verbose=False)
    assert not result and "i2t" in result.diagnoses


@pytest.mark.parametrize("wrong, key", [
    (lambda e, t: [(i, j) for i in range(len(e)) for j in range(len(e))
                   if (norm(e) @ norm(e).T)[i, j] >= t], "self_pairs"),
    (lambda e, t: [(i, j) for i in range(len(e)) for j in range(len(e))
                   if i != j and (norm(e) @ norm(e).T)[i, j] >= t], "both_orders"),
    (lambda e, t: [(i, j) for i in range(len(e)) for j in range(i + 1, len(e)) if (e @ e.T)[i, j] >= t], "value"),
])
def test_near_duplicates_wrong_solutions(wrong, key):
    result = check_near_duplicates(wrong, verbose=False)
    assert not result and key in result.diagnoses


def test_learner_exception_becomes_chinese_hint(capsys):
    def broken(query, gallery, k):
        raise RuntimeError("boom")
    result = check_topk_search(broken)
    out = capsys.readouterr().out
    assert not result and "运行你的函数时出错" in out and "RuntimeError" in out
    with pytest.raises(TypeError, match="callable"):
        check_recall_at_k("not a function")

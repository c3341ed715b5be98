"""练习检查器：参考解能通过，典型错误解不通过且给出对应提示（clipedu.exercises）。"""
import pytest
import torch
import torch.nn.functional as F

from clipedu.exercises import (check_infonce, check_infonce_grad, check_patchify, check_prompt_ensemble,
                               check_similarity_matrix, check_zero_shot_predict, run_checks)


def norm(x):
    return x / x.norm(dim=-1, keepdim=True)


# ---- 参考解 ----
def good_sim(img, txt):
    return norm(img) @ norm(txt).T


def good_infonce(img, txt, tau):
    logits = good_sim(img, txt) / tau
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def good_grad(sim, tau):
    n = sim.shape[0]
    eye = torch.eye(n, dtype=sim.dtype)
    return (torch.softmax(sim / tau, 1) - eye + torch.softmax(sim / tau, 0) - eye) / (2 * n * tau)


def autograd_grad(sim, tau):
    s = sim.detach().double().requires_grad_()
    labels = torch.arange(len(s))
    loss = (F.cross_entropy(s / tau, labels) + F.cross_entropy(s.T / tau, labels)) / 2
    loss.backward()
    return s.grad


def good_zero_shot(img, txt):
    return (norm(img) @ norm(txt).T).argmax(dim=1)


def good_ensemble(x):
    return norm(norm(x).mean(dim=1)).T


def good_patchify(x, p):
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


@pytest.mark.parametrize("checker, fn", [
    (check_similarity_matrix, good_sim),
    (check_infonce, good_infonce),
    (check_infonce_grad, good_grad),
    (check_infonce_grad, autograd_grad),
    (check_zero_shot_predict, good_zero_shot),
    (check_prompt_ensemble, good_ensemble),
    (check_patchify, good_patchify),
])
def test_reference_solutions_pass(checker, fn, capsys):
    result = checker(fn)
    assert result and result.passed and not result.diagnoses
    out = capsys.readouterr().out
    assert "通过 3/3" in out and "全部通过" in out


def test_i2t_direction_gradient():
    def i2t_grad(sim, tau):
        n = sim.shape[0]
        return (torch.softmax(sim / tau, 1) - torch.eye(n, dtype=sim.dtype)) / (n * tau)
    assert check_infonce_grad(i2t_grad, direction="i2t", verbose=False)
    # 对称版本的检查器应识别出“只算了一个方向”
    assert check_infonce_grad(i2t_grad, verbose=False).diagnoses == {"row_only"}
    with pytest.raises(ValueError, match="direction"):
        check_infonce_grad(i2t_grad, direction="t2x")


def _ce(logits):
    return F.cross_entropy(logits, torch.arange(len(logits)))


@pytest.mark.parametrize("wrong, key, phrase", [
    (lambda i, t, tau: _ce(good_sim(i, t) / tau), "image_to_text_only", "对称"),
    (lambda i, t, tau: _ce(good_sim(i, t).T / tau), "text_to_image_only", "图像→文本"),
    (lambda i, t, tau: _ce(good_sim(i, t) / tau) + _ce(good_sim(i, t).T / tau), "sum_directions", "平均"),
    (lambda i, t, tau: (_ce(i @ t.T / tau) + _ce(t @ i.T / tau)) / 2, "no_normalize", "归一化"),
    (lambda i, t, tau: (_ce(good_sim(i, t) * tau) + _ce(good_sim(i, t).T * tau)) / 2, "tau_multiplied", "sim / τ"),
    (lambda i, t, tau: (_ce(good_sim(i, t)) + _ce(good_sim(i, t).T)) / 2, "no_tau", "温度"),
])
def test_infonce_wrong_solutions_get_hints(wrong, key, phrase):
    result = check_infonce(wrong, verbose=False)
    assert not result
    assert result.diagnoses == {key}
    assert all(phrase in c.message for c in result.cases)


@pytest.mark.parametrize("wrong, key", [
    (lambda i, t: i @ t.T, "no_normalize"),
    (lambda i, t: norm(t) @ norm(i).T, "transposed"),
    (lambda i, t: norm(i) @ t.T, "half_normalized"),
])
def test_similarity_wrong_solutions(wrong, key):
    result = check_similarity_matrix(wrong, verbose=False)
    assert not result and key in result.diagnoses


@pytest.mark.parametrize("wrong, key", [
    (lambda s, tau: (torch.softmax(s / tau, 1) + torch.softmax(s / tau, 0) - 2 * torch.eye(len(s))) / (len(s) * tau), "no_half"),
    (lambda s, tau: -good_grad(s, tau), "sign"),
    (lambda s, tau: good_grad(s, tau) * tau, "no_tau"),
    (lambda s, tau: good_grad(s, tau) * len(s), "no_batch_mean"),
])
def test_grad_wrong_solutions(wrong, key):
    result = check_infonce_grad(wrong, verbose=False)
    assert not result
    # τ=1 的用例里 no_tau 与正确答案相同，所以只要求未通过的用例都给出这个诊断
    assert result.diagnoses == {key}


@pytest.mark.parametrize("wrong, key", [
    (lambda i, t: (i @ t.T).argmax(dim=1), "no_normalize_text"),
    (lambda i, t: good_sim(i, t).argmin(dim=1), "argmin"),
    (lambda i, t: good_sim(i, t), "not_index"),
])
def test_zero_shot_wrong_solutions(wrong, key):
    result = check_zero_shot_predict(wrong, verbose=False)
    assert not result and key in result.diagnoses


@pytest.mark.parametrize("wrong, key", [
    (lambda x: norm(x.mean(dim=1)).T, "no_normalize_before_mean"),
    (lambda x: norm(x).mean(dim=1).T, "no_normalize_after_mean"),
    (lambda x: norm(norm(x).mean(dim=1)), "transposed"),
])
def test_ensemble_wrong_solutions(wrong, key):
    result = check_prompt_ensemble(wrong, verbose=False)
    assert not result and key in result.diagnoses


@pytest.mark.parametrize("wrong, key", [
    (lambda x, p: good_patchify(x, p).transpose(1, 2), "not_transposed"),
    (lambda x, p: x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).reshape(len(x), -1, x.shape[1] * p * p), "channel_last"),
])
def test_patchify_wrong_solutions(wrong, key):
    result = check_patchify(wrong, verbose=False)
    assert not result and key in result.diagnoses


def test_learner_exception_becomes_hint_and_report_is_chinese(capsys):
    def broken(img, txt, tau):
        raise RuntimeError("boom")
    result = check_infonce(broken)
    assert not result and result.diagnoses == {"exception"}
    out = capsys.readouterr().out
    assert "运行你的函数时出错" in out and "boom" in out and "通过 0/3" in out
    with pytest.raises(TypeError, match="函数"):
        check_infonce(42)


def test_run_checks_generic():
    res = run_checks("示例", [("好", lambda: None)], verbose=False)
    assert res and "通过 1/1" in repr(res)
    assert not run_checks("空", [], verbose=False)

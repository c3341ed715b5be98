"""clipedu.setup_notebook：种子、设备、线程与中文字体（无豆腐块、无 Glyph missing 警告）。"""
import io
import random
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import clipedu  # noqa: E402
from clipedu import notebook  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_state():
    threads = torch.get_num_threads()
    rc = matplotlib.rcParams.copy()
    yield
    torch.set_num_threads(threads)
    matplotlib.rcParams.update(rc)


def test_returns_device_and_seeds_everything():
    device = clipedu.setup_notebook(seed=123, quiet=True)
    assert isinstance(device, torch.device)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    a = (random.random(), np.random.rand(), torch.rand(3))
    clipedu.setup_notebook(seed=123, quiet=True)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1]
    torch.testing.assert_close(a[2], b[2])
    clipedu.setup_notebook(seed=124, quiet=True)
    assert random.random() != a[0]


def test_threads_default_and_explicit():
    clipedu.setup_notebook(quiet=True)
    assert torch.get_num_threads() <= 2
    clipedu.setup_notebook(threads=1, quiet=True)
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads"):
        clipedu.setup_notebook(threads=-1, quiet=True)
    with pytest.raises(TypeError, match="seed"):
        clipedu.setup_notebook(seed="0", quiet=True)


def _render_chinese_figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([-1, 0, 1], [1, -2, 3])
    ax.set_title("对比学习：温度与损失")
    ax.set_xlabel("训练步数")
    ax.set_ylabel("损失（负值）")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    return [str(w.message) for w in caught]


def test_chinese_figure_has_no_missing_glyph_warning():
    clipedu.setup_notebook(quiet=True)
    family = matplotlib.rcParams["font.sans-serif"][0]
    assert "CJK" in family or "Hei" in family or "Han" in family
    messages = _render_chinese_figure()
    assert not [m for m in messages if "missing" in m.lower()], messages
    assert matplotlib.rcParams["axes.unicode_minus"] is False


def test_without_font_setup_glyphs_are_missing():
    """反面对照：默认 DejaVu Sans 没有汉字，确认上面的测试真能抓到豆腐块。"""
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["font.sans-serif"] = ["DejaVu Sans"]
    messages = _render_chinese_figure()
    assert any("missing" in m.lower() for m in messages)


def test_font_resolves_to_a_file_with_cjk_glyphs():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    family = notebook.register_cjk_font()
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    font = FT2Font(path)
    for ch in "多模态对比学习":
        assert font.get_char_index(ord(ch)) != 0, f"{path} 缺少字形 {ch}"


def test_fallback_to_system_font_and_clear_error(monkeypatch):
    from matplotlib import font_manager

    monkeypatch.setattr(notebook, "_mplfonts_path", lambda: None)
    fake = font_manager.FontEntry(fname="/nonexistent/x.otf", name="WenQuanYi Zen Hei")
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [fake])
    assert notebook.register_cjk_font() == "WenQuanYi Zen Hei"
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [])
    with pytest.raises(RuntimeError, match="中文字体"):
        notebook.register_cjk_font()


def test_default_threads_follow_cpu_affinity(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(notebook.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert notebook.usable_cpus() == 1 and notebook.default_threads() == 1
    clipedu.setup_notebook(quiet=True)
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(notebook.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert notebook.default_threads() == 2
    # 用户（或 CI 里并行执行笔记本时）设的 OMP_NUM_THREADS 优先；无效值不理会
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert notebook.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    assert notebook.default_threads() == 2


@pytest.mark.slow
def test_import_clipedu_sets_passive_wait_policy_before_torch():
    """import clipedu 先于 torch：子进程里 OMP_WAIT_POLICY 被设为 PASSIVE；用户设过的值保留；
    torch 先载入时 clipedu 知道策略没有生效（setup_notebook 据此提示）。"""
    import json
    import os
    import subprocess
    import sys
    code = ("import os, json, sys; {first}; import clipedu, torch; "
            "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), clipedu.OMP_PASSIVE]))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    def run(first, **extra):
        out = subprocess.run([sys.executable, "-c", code.format(first=first)], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    assert run("pass") == ["PASSIVE", True]
    assert run("pass", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", False]
    assert run("import torch") == [None, False]
    assert run("import torch", OMP_WAIT_POLICY="passive") == ["passive", True]

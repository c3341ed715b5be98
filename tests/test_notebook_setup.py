"""clipedu.setup_notebook：种子、设备、线程与中文字体（无豆腐块、无 Glyph missing 警告）。"""
import io
import os
import time
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
    monkeypatch.setattr(notebook, "other_busy_cpus", lambda: 0.0)
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


@pytest.mark.parametrize("others, usable, expected", [
    (None, 2, 2),   # 量不到（非 Linux）：照常 2 个线程
    (0.0, 2, 2), (0.4, 2, 2),   # 空闲或零星的别的进程
    (0.6, 2, 1), (1.0, 2, 1), (3.0, 2, 1),   # 一个或更多忙进程：只用 1 个线程
    (1.0, 8, 2), (6.8, 8, 1),   # 核多时，别人占着的核不够挤掉第二个线程才减
])
def test_default_threads_leave_busy_cores_alone(monkeypatch, capsys, others, usable, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(notebook, "other_busy_cpus", lambda: others)
    monkeypatch.setattr(notebook.os, "sched_getaffinity", lambda pid: set(range(usable)), raising=False)
    assert notebook.default_threads() == expected
    clipedu.setup_notebook()
    assert torch.get_num_threads() == expected
    said = "只用 1 个线程" in capsys.readouterr().out
    assert said == (expected < 2)
    # 用户明说的线程数不看负载
    clipedu.setup_notebook(threads=2, quiet=True)
    assert torch.get_num_threads() == 2


def test_other_busy_cpus_counts_other_processes_not_this_one(monkeypatch):
    """/proc/stat 的非空闲时间减去本进程的 CPU 时间，再除以墙钟。用假的读数检查这个算式与边界。"""
    from clipedu import benchmarking
    stat = iter([10.0, 12.5])                  # 2.5 s 非空闲 CPU 时间
    clocks = iter([(1.0, 100.0), (2.0, 101.0)])  # 其中 1.0 s 是本进程自己的；1 s 墙钟
    monkeypatch.setattr(benchmarking, "_cpu_busy_seconds", lambda cpus: next(stat))
    monkeypatch.setattr(benchmarking, "_clocks", lambda: next(clocks))
    assert benchmarking.other_busy_cpus(0.01) == pytest.approx(1.5)
    # 本进程用得比全机统计的还多（计数粒度）时不返回负数；读不到 /proc/stat 时返回 None
    stat, clocks = iter([10.0, 10.5]), iter([(0.0, 0.0), (1.0, 1.0)])
    assert benchmarking.other_busy_cpus(0.01) == 0.0
    monkeypatch.setattr(benchmarking, "_cpu_busy_seconds", lambda cpus: None)
    assert benchmarking.other_busy_cpus(0.01) is None


def test_proc_stat_busy_seconds_only_counts_allowed_cpus():
    from clipedu import benchmarking
    cpus = os.sched_getaffinity(0)
    all_busy = benchmarking._cpu_busy_seconds(cpus)
    assert all_busy is not None and all_busy > 0
    assert benchmarking._cpu_busy_seconds({10_000}) is None   # 不存在的 CPU：没有数据
    # 本进程忙 0.3 s，非空闲时间至少涨这么多（别的进程只会让它涨得更多）
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:
        pass
    assert benchmarking._cpu_busy_seconds(cpus) - all_busy >= 0.25


@pytest.mark.slow
def test_import_clipedu_limits_openmp_spinning_before_torch():
    """import clipedu 先于 torch：子进程里 GOMP_SPINCOUNT 被设为短自旋；用户设过的等待方式保留；
    torch 先载入时 clipedu 知道设置没有生效（setup_notebook 据此提示）。"""
    import json
    import subprocess
    import sys
    code = ("import os, json, sys; {first}; import clipedu, torch; "
            "print(json.dumps([os.environ.get('GOMP_SPINCOUNT'), clipedu.OMP_SHORT_WAIT]))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def run(first, **extra):
        out = subprocess.run([sys.executable, "-c", code.format(first=first)], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    assert run("pass") == [clipedu.SPINCOUNT, True]
    assert run("pass", OMP_WAIT_POLICY="ACTIVE") == [None, False]     # 用户要一直自旋：不动
    assert run("pass", OMP_WAIT_POLICY="passive") == [None, True]
    assert run("pass", GOMP_SPINCOUNT="infinite") == ["infinite", False]
    assert run("pass", GOMP_SPINCOUNT="0", OMP_WAIT_POLICY="ACTIVE") == ["0", True]  # libgomp：SPINCOUNT 优先
    assert run("import torch") == [None, False]
    assert run("import torch", OMP_WAIT_POLICY="passive") == [None, True]

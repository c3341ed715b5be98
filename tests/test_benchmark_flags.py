"""基准脚本的命令行：坏参数在开始训练之前就给出一行中英文错误（argparse 的退出码 2），不留 traceback；以及结果文件里的机器描述。"""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ch2_diffusion  # noqa: E402
import unet_layout  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--scales", "1,x"], "--scales 应是逗号分隔的数"),
    (["--scales", "1,-2"], "不小于 0 的有限数"),
    (["--scales", "inf"], "不小于 0 的有限数"),
    (["--snr-gamma", "nan"], "--snr-gamma"),
    (["--snr-gamma", "-1"], "--snr-gamma"),
    (["--ema-decay", "1"], "--ema-decay"),
    (["--ddpm-steps", "0"], "--ddpm-steps 至少为 1"),
    (["--per-class", "-3"], "--per-class 至少为 1"),
    (["--timesteps", "1"], "--timesteps 至少为 2"),
])
def test_ch2_diffusion_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        ch2_diffusion.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="这台机器有 GPU")
def test_ch2_diffusion_asks_for_cpu_without_a_gpu(capsys):
    with pytest.raises(SystemExit):
        ch2_diffusion.main(["--device", "cuda"])
    assert "--device cpu" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--threads", "--batch", "--steps", "--repeats"])
def test_unet_layout_rejects_non_positive_counts(flag, capsys):
    with pytest.raises(SystemExit) as e:
        unet_layout.main([flag, "0"])
    assert e.value.code == 2 and f"{flag} 至少为 1" in capsys.readouterr().err


@pytest.mark.slow
def test_unet_layout_times_every_variant_once(capsys):
    """一步训练、一步采样、每种变体一次：表里四行都有数，相对值以第一行为 1.00×。"""
    threads = torch.get_num_threads()
    try:
        unet_layout.main(["--steps", "1", "--repeats", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # 脚本设的是进程级的线程数，别影响同一进程里后面的测试
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and "ms" not in line and "---" not in line]
    assert len(rows) == len(unet_layout.VARIANTS)
    assert rows[0].count("1.00×") == 2


def test_describe_cpu_names_model_instruction_sets_and_cores():
    from clipedu.benchmarking import describe_cpu, machine_info

    fake = {"cpu_model": "AMD EPYC", "cpu_flags": ["avx2", "fma"], "usable_cpus": 2}
    assert describe_cpu(fake) == "AMD EPYC（avx2, fma），2 核"
    real = machine_info()
    assert describe_cpu(real).startswith(real["cpu_model"]) and f"{real['usable_cpus']} 核" in describe_cpu(real)

"""加固（issue 15）：数据与权重文件不执行代码、输出目录不被覆盖、没有输入让命令永远不停、每个用户错误一行说明。

每类问题都从命令行入口 ``clipedu.cli.main`` 测（进程内调用，省去启动 Python 的时间）；
需要两个进程或信号的情形在 test_hardening_procs.py。可能卡住的测试都有 SIGALRM 兜底。
"""
import errno
import json
import os
import pickle
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from cli_helpers import TRAIN, cli as _cli, no_hang, one_clear_line as _one_clear_line  # noqa: F401
from clipedu.config import CLIPConfig, TextConfig, TrainConfig, VisionConfig
from realdata_fixtures import jpeg_bytes, png_bytes, write_csv_folder, write_fake_cifar

pytestmark = pytest.mark.usefixtures("no_hang")


class Evil:
    """反序列化时会创建标记文件：用来证明代码没有被执行。"""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_model_config() -> CLIPConfig:
    return CLIPConfig(embed_dim=16, vision=VisionConfig(image_size=16, patch_size=8, width=32, layers=1, heads=2),
                      text=TextConfig(context_length=16, width=32, heads=2, layers=1))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """一个最小的 clipedu 检查点（不训练，直接保存随机初始化的模型）。"""
    from clipedu.checkpoint import FORMAT, VERSION, save_checkpoint
    from clipedu.model import CLIP
    from clipedu.tokenizer import ChineseTokenizer

    torch.manual_seed(0)
    cfg = _tiny_model_config()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint({"format": FORMAT, "version": VERSION, "model": CLIP(cfg).state_dict(),
                     "tokenizer": ChineseTokenizer(context_length=16).state_dict(), "config": cfg.to_dict()}, path)
    return path


# ---------------------------------------------------------------- 数据与权重里的代码不执行

@pytest.mark.slow
def test_cifar_malicious_batch_is_refused_without_running_code(tmp_path, capsys, tiny_ckpt):
    write_fake_cifar(tmp_path, 10)
    rc, out, err = _cli(capsys, "eval", "--checkpoint", tiny_ckpt, "--dataset", "cifar10", "--root", tmp_path, "--json")
    assert rc == 0 and json.loads(out)["bad_samples"] == 0  # 正常的批文件照常读
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": Evil(marker), "labels": [0]}, protocol=2))
    rc, out, err = _cli(capsys, "eval", "--checkpoint", tiny_ckpt, "--dataset", "cifar10", "--root", tmp_path)
    assert rc == 2 and not marker.exists()
    line = _one_clear_line(err)
    assert "test_batch" in line and "posix.system" in line and "refused unsafe pickle" in line


@pytest.mark.parametrize("argv", [
    ["eval", "--checkpoint", "{evil}"],
    ["train", "--init-from", "{evil}", "--out", "{tmp}/a"],
    ["train", "--resume", "{evil}", "--out", "{tmp}/b"],
])
def test_refused_checkpoint_names_the_global_and_not_weights_only_false(tmp_path, capsys, argv):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": "clipedu-checkpoint", "model": Evil(marker)}, evil)
    rc, _, err = _cli(capsys, *[a.replace("{evil}", str(evil)).replace("{tmp}", str(tmp_path)) for a in argv],
                      *(TRAIN[1:] if argv[0] == "train" else []))
    assert rc in (1, 2) and not marker.exists()
    line = _one_clear_line(err)
    assert "weights_only=False" not in err and "refused unsafe" in line and "evil.pt" in line


def test_load_pretrained_on_a_clipedu_checkpoint_uses_its_config(tiny_ckpt, tmp_path):
    import clipedu
    from clipedu.checkpoint import load_checkpoint
    model, _ = clipedu.load_pretrained(str(tiny_ckpt))
    assert model.config.to_dict() == _tiny_model_config().to_dict()  # 头数、EOS、激活都照原样
    bare = tmp_path / "bare.pt"  # 只有 state dict、没有配置：拒绝并指向 load_model
    torch.save(load_checkpoint(tiny_ckpt)["model"], bare)
    with pytest.raises(ValueError, match="load_model"):
        clipedu.load_pretrained(str(bare))


# ---------------------------------------------------------------- 输出目录：不覆盖、加锁、续训要对得上

@pytest.mark.slow
def test_used_out_dir_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, *TRAIN, "--out", out, "--save-every", "1", "--keep-last", "5")[0] == 0
    assert (out / "ckpt_step1.pt").exists() and not (out / ".clipedu.lock").exists()  # 结束时释放锁
    log_before = (out / "log.jsonl").read_text()
    rc, _, err = _cli(capsys, *TRAIN, "--out", out)
    assert rc == 2 and "--resume latest" in err and "--overwrite" in err
    assert "output directory not empty" in _one_clear_line(err)
    assert (out / "log.jsonl").read_text() == log_before  # 旧训练原封不动
    # --resume 接着训练；--steps 3 只多训 1 步
    assert _cli(capsys, *TRAIN, "--out", out, "--resume", "latest", "--steps", "3")[0] == 0
    assert [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    # --overwrite：旧的 ckpt_step*.pt 被删掉，不会在轮换中删掉新训练的检查点
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--overwrite", "--steps", "1")
    assert rc == 0 and "--overwrite" in err
    assert sorted(p.name for p in out.glob("ckpt_step*.pt")) == []
    assert [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()] == [1]
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--overwrite", "--resume", "latest")
    assert rc == 2 and "conflicting flags" in err


def _lock(out: Path, pid: int, host: str | None = None):
    out.mkdir(parents=True, exist_ok=True)
    (out / ".clipedu.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                   "since": "2026-01-01 00:00:00", "argv": "other run"}))


@pytest.mark.slow
def test_busy_out_dir_gets_a_lock_error_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(out, sleeper.pid)
        rc, _, err = _cli(capsys, *TRAIN, "--out", out)
        assert rc == 1 and f"pid {sleeper.pid}" in err and "output directory is locked" in _one_clear_line(err)
        # torchrun 的其他 rank 属于同一次训练：不持锁，也不因 0 号进程的锁报错
        from clipedu.outdir import OutDirLock
        os.environ["RANK"] = "1"
        try:
            with OutDirLock(out) as lock:
                assert not lock.enabled
        finally:
            del os.environ["RANK"]
    finally:
        sleeper.kill()
        sleeper.wait()
    _lock(out, sleeper.pid)  # 持有者已被杀死：陈旧锁，宣布并接管
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--resume", "latest")
    assert rc == 0 and "stale lock" in err and not (out / ".clipedu.lock").exists()
    _lock(out, 1, host="another-host")  # 别的机器上的锁无法判断死活：拒绝，并说明怎样确认后删除
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--resume", "latest")
    assert rc == 1 and "another-host" in err and ".clipedu.lock" in err


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_preset_and_logs_survive_corruption(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, *TRAIN, "--out", out, "--save-every", "1", "--steps", "3")[0] == 0
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--resume", "latest", "--preset", "small", "--steps", "4")
    assert rc == 2 and "embed_dim: 检查点 128 ≠ 现在 256" in err and "--preset tiny-cpu" in err
    assert "resume config mismatch" in _one_clear_line(err)
    # 最新的检查点损坏：退回更早的一个，并宣布
    (out / "last.pt").write_bytes(b"not a checkpoint")
    lines = (out / "log.jsonl").read_text().splitlines()
    (out / "log.jsonl").write_text("\n".join([lines[0], "{corrupt", *lines[1:]]) + "\n")
    from clipedu.run_log import read_log
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3]  # 坏行只丢它自己
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--resume", "latest", "--steps", "4")
    assert rc == 0 and "last.pt" in err and "skipping unreadable checkpoint" in err
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3, 4]  # 从 ckpt_step3 续


@pytest.mark.parametrize("make, phrase", [
    (lambda p: p.write_text("x"), "output path is a file"),
    (lambda p: (p.parent / "f").write_text("x"), "under a file"),
])
def test_out_that_is_or_is_under_a_file(tmp_path, capsys, make, phrase):
    target = tmp_path / "out"
    make(target)
    out = target if target.exists() else tmp_path / "f" / "out"
    rc, _, err = _cli(capsys, *TRAIN, "--out", out)
    assert rc == 2 and str(out) in err and phrase in _one_clear_line(err)


# ---------------------------------------------------------------- 每个用户错误一行说明

@pytest.mark.parametrize("flags, needle", [
    (["--grad-clip", "0"], "--grad-clip"), (["--grad-clip", "-1"], "--grad-clip"), (["--steps", "0"], "--steps"),
    (["--batch-size", "0"], "--batch-size"), (["--time-budget", "-5"], "--time-budget"),
    (["--time-budget", "nan"], "--time-budget"), (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--head-lr-mult", "-1"], "--head-lr-mult"), (["--lr", "inf"], "--lr"),
    (["--device", "tpu"], "--device"), (["--device", "mps"], "--device"),
    (["--log-every", "0"], "--log-every"), (["--encoding", "no-such-codec"], "--encoding"),
    (["--max-bad-fraction", "2"], "--max-bad-fraction"), (["--steps", "abc"], "--steps"),
    (["--dataset", "imagenet"], "--dataset"), (["--no-such-flag"], "no-such-flag"),
    (["--csv-img-key", "path"], "--csv-img-key"), (["--max-objects", "2", "--dataset", "digits"], "--max-objects"),
    (["--ema-decay", "1"], "--ema-decay"), (["--ema-decay", "-0.5"], "--ema-decay"),
    (["--data-path", "x.csv"], "--data-path"), (["--init-from", "w.pt", "--preset", "small"], "--preset"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(tmp_path, capsys, flags, needle):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1}\n')
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--resume", "latest", *flags)
    assert rc == 2 and needle in _one_clear_line(err)
    assert (out / "log.jsonl").read_text() == '{"step": 1}\n'  # 报错之前什么都没动（--log-every 0 曾清空日志）


def test_config_validation_is_shared_by_api_and_cli():
    with pytest.raises(ValueError, match="--grad-clip"):
        TrainConfig(grad_clip=-1.0)
    cfg = TrainConfig()
    cfg.batch_size = 0  # 构造后改坏的字段，train() 开始前也会拦住
    with pytest.raises(ValueError, match="--batch-size"):
        cfg.validate()


@pytest.mark.slow
def test_failures_exit_1_with_one_line(tmp_path, capsys, monkeypatch, tiny_ckpt):
    # 没有分词器的检查点
    from clipedu.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(tiny_ckpt)
    del ckpt["tokenizer"]
    save_checkpoint(ckpt, tmp_path / "notok.pt")
    rc, _, err = _cli(capsys, "eval", "--checkpoint", tmp_path / "notok.pt")
    assert rc == 2 and "tokenizer" in _one_clear_line(err)
    # 坏的 safetensors
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r1", "--init-from", tmp_path / "bad.safetensors")
    assert rc == 1 and "safetensors" in _one_clear_line(err)
    # 缺键的权重
    from safetensors.torch import save_file
    save_file({"visual.proj": torch.zeros(2, 2)}, str(tmp_path / "partial.safetensors"))
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r2", "--init-from", tmp_path / "partial.safetensors")
    assert rc == 2 and "text_projection" in _one_clear_line(err)
    # 保存时磁盘满：一行说明，旧文件保持原样
    import clipedu.checkpoint as ck

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(ck, "save_checkpoint", full)
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r3")
    assert rc == 1 and "no space left on device" in _one_clear_line(err) and "last.pt" in err


def test_keyboard_interrupt_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
    import clipedu.trainer as tr

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(tr, "_loop", interrupted)
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r")
    assert rc == 130 and "interrupted" in _one_clear_line(err)
    assert not (tmp_path / "r" / ".clipedu.lock").exists()  # 中断也释放锁


# ---------------------------------------------------------------- 没有输入让命令永远不停

def _tar(path: Path, members: dict):
    import io
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["empty_file", "not_a_tar", "empty_tar", "all_bad_images", "no_captions"])
def test_wds_without_readable_samples_stops_with_an_error_naming_the_shard(tmp_path, capsys, kind):
    shard = tmp_path / "shard-000000.tar"
    if kind == "empty_file":
        shard.write_bytes(b"")
    elif kind == "not_a_tar":
        shard.write_bytes(b"hello, this is not a tar archive" * 50)
    elif kind == "empty_tar":
        _tar(shard, {})
    elif kind == "all_bad_images":
        _tar(shard, {f"{i:04d}.jpg": b"garbage" for i in range(3)} | {f"{i:04d}.txt": "图".encode() for i in range(3)})
    else:
        _tar(shard, {f"{i:04d}.png": png_bytes() for i in range(3)})
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "run", "--dataset", "wds", "--data-path", shard)
    assert rc == 1 and "shard-000000.tar" in _one_clear_line(err)


EXTS = ["jpg", "jpeg", "JPG", "jfif", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "txt", "noext", "ico"]


def _image_bytes(ext: str) -> bytes:
    import io
    from PIL import Image
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "jfif": "JPEG", "tif": "TIFF", "txt": "PNG", "noext": "JPEG"}.get(
        ext.lower(), ext.upper())
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_data_shard_round_trips_every_image_extension(tmp_path, capsys):
    from clipedu.data.wds import build_wds_dataset
    rows = [(f"img{i}.{e}" if e != "noext" else f"img{i}", f"第{i}张", _image_bytes(e)) for i, e in enumerate(EXTS)]
    csv = write_csv_folder(tmp_path / "src", rows)
    rc, out, err = _cli(capsys, "data", "shard", "--csv", csv, "--out", tmp_path / "sh", "--shard-size", "100")
    assert rc == 0, err
    samples = list(build_wds_dataset(str(tmp_path / "sh"), repeat=False, shuffle_buffer=0))
    assert [s[1] for s in samples] == [f"第{i}张" for i in range(len(EXTS))]  # 每张都读回来了，文本没被图像顶替
    assert all(s.bad == [] for s in samples)
    with tarfile.open(tmp_path / "sh" / "shard-000000.tar") as t:
        names = t.getnames()
    assert sum(n.endswith(".txt") for n in names) == len(EXTS) and len(names) == 2 * len(EXTS)
    # 训练能在这些分片上跑（曾经 .jfif / *.txt 图像的分片让训练空转）
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "run", "--dataset", "wds", "--data-path", tmp_path / "sh")
    assert rc == 0, err
    # 已有分片的目录：拒绝，--overwrite 时重写
    rc, _, err = _cli(capsys, "data", "shard", "--csv", csv, "--out", tmp_path / "sh")
    assert rc == 2 and "--overwrite" in _one_clear_line(err)
    assert _cli(capsys, "data", "shard", "--csv", csv, "--out", tmp_path / "sh", "--overwrite")[0] == 0


def test_fifo_and_device_paths_never_block(tmp_path, capsys):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r1", "--dataset", "csv", "--data-path", fifo)
    assert rc == 2 and "not a regular file" in _one_clear_line(err)
    os.mkfifo(tmp_path / "img_fifo.png")
    rows = [(f"{i}.png", f"第{i}张", png_bytes((20 * i, 0, 0))) for i in range(8)]
    csv = write_csv_folder(tmp_path, rows)
    with open(csv, "a") as f:
        f.write(f"{tmp_path / 'img_fifo.png'},管道\n/dev/zero,设备\n")
    from clipedu.data import CsvDataset
    ds = CsvDataset(str(csv), max_bad_fraction=0.5)
    bad = [ds[i].bad for i in range(len(ds))]
    assert sorted(r for b in bad for r in b) == ["not_regular_file", "not_regular_file"]
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r2", "--dataset", "csv", "--data-path", csv,
                      "--max-bad-fraction", "0.5")
    assert rc == 0, err
    # 以文搜图读图也一样：建索引之后被换成 FIFO 的图片文件不会让 open 卡住
    from clipedu.search.images import BadImage, read_file
    with pytest.raises(BadImage, match="unreadable"):
        read_file(tmp_path / "img_fifo.png")


@pytest.mark.slow
def test_a_block_of_bad_rows_within_the_limit_is_counted_once(tmp_path, capsys):
    # 40 张好图后跟连续 60 行缺图：旧实现按相邻下标找替补，64 次内找不到就中止，还把坏行数了多遍
    rows = [(f"{i}.png", f"第{i}张", png_bytes((5 * i, 0, 0)) if i < 40 else None) for i in range(100)]
    csv = write_csv_folder(tmp_path, rows)
    out = tmp_path / "run"
    rc, _, err = _cli(capsys, *TRAIN, "--out", out, "--dataset", "csv", "--data-path", csv,
                      "--batch-size", "50", "--max-bad-fraction", "0.7")
    assert rc == 0, err
    bad = json.loads((out / "metrics.json").read_text())["bad_samples"]
    assert bad["by_reason"] == {"missing_file": 60}  # 2 步 × 50 = 恰好一轮：每个坏行恰好一次
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "run2", "--dataset", "csv", "--data-path", csv,
                      "--batch-size", "50", "--max-bad-fraction", "0.3")
    assert rc == 1 and "too many bad samples" in _one_clear_line(err) and "data.csv" in err


def test_num_workers_errors_are_one_line(tmp_path, capsys):
    rows = [(f"{i}.png", f"第{i}张", png_bytes() if i != 1 else b"garbage") for i in range(8)]
    csv = write_csv_folder(tmp_path, rows)
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r", "--dataset", "csv", "--data-path", csv,
                      "--num-workers", "1", "--strict")
    assert rc == 1 and "DataLoader worker" in _one_clear_line(err) and "1.png" in err


# ---------------------------------------------------------------- 评估报告跳过的样本

def test_eval_reports_bad_samples_and_ignores_symlink_loops(tmp_path, capsys, tiny_ckpt):
    root = tmp_path / "folder"
    for name, color in (("cat", (255, 0, 0)), ("dog", (0, 255, 0))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.png").write_bytes(png_bytes(color))
    (root / "cat" / "broken.jpg").write_bytes(b"garbage")
    (root / "cat" / "loop").symlink_to(root)  # 指回 root 的环：曾经把 dog 的图算成 cat 的
    from clipedu.data import ImageFolderZh
    assert len(ImageFolderZh(str(root), max_bad_fraction=0.5)) == 7
    rc, out, err = _cli(capsys, "eval", "--checkpoint", tiny_ckpt, "--dataset", "imagefolder", "--root", root,
                        "--json", "--max-bad-fraction", "0.5")
    assert rc == 0, err
    m = json.loads(out)
    assert m["bad_samples"] == 1 and m["bad_samples_by_reason"] == {"corrupt_image": 1}
    rc, _, err = _cli(capsys, "eval", "--checkpoint", tiny_ckpt, "--dataset", "imagefolder", "--root", root)
    assert rc == 1 and "broken.jpg" in _one_clear_line(err)  # 1/7 超过默认上限 1%


def test_fifo_as_checkpoint_or_init_from_is_refused(tmp_path, capsys):
    fifo = tmp_path / "w.pt"
    os.mkfifo(fifo)
    for argv in (["eval", "--checkpoint", fifo], [*TRAIN, "--out", tmp_path / "r", "--init-from", fifo],
                 [*TRAIN, "--out", tmp_path / "r", "--resume", fifo]):
        rc, _, err = _cli(capsys, *argv)
        assert rc == 2 and "FIFO" in _one_clear_line(err)


def test_gbk_csv_with_custom_columns_trains_with_the_flags_the_hints_name(tmp_path, capsys):
    rows = [(f"{i}.png", f"第{i}张红色方块", png_bytes((20 * i, 0, 0))) for i in range(8)]
    csv = write_csv_folder(tmp_path, rows, name="data.tsv", header="path\tcaption", encoding="gb18030")
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r1", "--dataset", "csv", "--data-path", csv)
    assert rc == 2 and "--csv-img-key" in err and "--csv-caption-key" in err  # 提示的旗标真实存在
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r2", "--dataset", "csv", "--data-path", csv,
                      "--csv-img-key", "path", "--csv-caption-key", "caption")
    assert rc == 1 and "--encoding gb18030" in err  # 不是 UTF-8：每行都坏，提示 --encoding
    rc, _, err = _cli(capsys, *TRAIN, "--out", tmp_path / "r3", "--dataset", "csv", "--data-path", csv,
                      "--csv-img-key", "path", "--csv-caption-key", "caption", "--encoding", "gb18030")
    assert rc == 0, err


def test_huge_single_line_table_is_not_read_whole(tmp_path):
    from clipedu.data.robust import iter_lines
    big = tmp_path / "big.csv"
    big.write_bytes(b"filepath,title\n" + b"x" * (3 * 2**20) + b"\nimgs/a.png,ok\n")
    with open(big, "rb") as f:
        got = list(iter_lines(f, 2**20))
    assert [(r is None, n) for r, n in got] == [(False, 15), (True, 3 * 2**20 + 1), (False, 14)]

"""加固（issue 15）续：每个子命令的每个数值旗标都有上下限，写输出目录的命令共用同一套 --out 检查与锁。

全部从命令行入口进程内调用（见 cli_helpers.py）；这里的用例都在做任何重活之前就结束，整个文件几秒钟。
"""
import json
import os
import socket

import pytest

from cli_helpers import TRAIN, cli, no_hang, one_clear_line  # noqa: F401
from realdata_fixtures import png_bytes, write_csv_folder

pytestmark = pytest.mark.usefixtures("no_hang")

HUGE = "99999999999999999999999"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """最小的 clipedu 检查点（随机权重），index、serve、export、eval 都要一个。"""
    from clipedu.search.testing import save_random_checkpoint
    from tiny import tiny_model_config
    return save_random_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", tiny_model_config())


def _argv(cmd: str, tmp, ckpt) -> list:
    """每个子命令的必需参数（数值旗标的检查发生在解析时，这些文件不会被读到）。"""
    return {
        "train": [*TRAIN, "--out", tmp / "run"],
        "eval": ["eval", "--checkpoint", ckpt],
        "shard": ["data", "shard", "--csv", tmp / "x.csv", "--out", tmp / "sh"],
        "index": ["index", "--checkpoint", ckpt, "--images", tmp, "--out", tmp / "ix"],
        "serve": ["serve", "--index", tmp / "ix", "--checkpoint", ckpt],
        "export": ["export", "--checkpoint", ckpt, "--out", tmp / "ex"],
    }[cmd]


# 类：数值旗标大到吃光内存、线程或永远睡下去，或是 nan/inf/负数。以前这些值有的空转、有的崩溃、有的被悄悄接受
BAD_NUMBERS = [
    ("train", "--eval-size", "1000000000"), ("train", "--batch-size", "2000000"),
    ("train", "--num-workers", "100000"), ("train", "--seed", HUGE), ("train", "--lr", "1e300"),
    ("train", "--accum-steps", HUGE), ("train", "--image-lr-mult", "1e30"), ("train", "--weight-decay", "1e9"),
    ("eval", "--eval-size", "1000000000"), ("eval", "--seed", HUGE), ("eval", "--max-bad-fraction", "-1"),
    ("shard", "--shard-size", "0"), ("shard", "--max-bad-fraction", "nan"),
    ("index", "--chunk-size", HUGE), ("index", "--batch-size", "100000"), ("index", "--max-mb", "inf"),
    ("index", "--max-mb", "-1"), ("index", "--threads", "1000000"), ("index", "--throttle", "inf"),
    ("index", "--throttle", "nan"),
    ("serve", "--port", "99999"), ("serve", "--port", "0"), ("serve", "--max-upload-mb", "-5"),
    ("serve", "--threads", "-1"),
]


@pytest.mark.parametrize("cmd, flag, value", BAD_NUMBERS, ids=[f"{c}{f}={v[:8]}" for c, f, v in BAD_NUMBERS])
def test_every_numeric_flag_is_bounded(tmp_path, capsys, ckpt, cmd, flag, value):
    rc, _, err = cli(capsys, *_argv(cmd, tmp_path, ckpt), flag, value)
    assert rc == 2 and flag in one_clear_line(err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "ix").exists()  # 报错之前什么都没建


BAD_WORDS = [
    ("train", "--csv-separator", "ab"), ("shard", "--csv-separator", ""), ("index", "--dtype", "int8"),
    ("index", "--backend", "tensorflow"), ("serve", "--backend", "tf"), ("export", "--format", "tflite"),
]


@pytest.mark.parametrize("cmd, flag, value", BAD_WORDS)
def test_word_flags_are_checked_when_parsed(tmp_path, capsys, ckpt, cmd, flag, value):
    rc, _, err = cli(capsys, *_argv(cmd, tmp_path, ckpt), flag, value)
    assert rc == 2 and flag in one_clear_line(err)


def test_batch_larger_than_the_dataset_is_refused(tmp_path, capsys):
    """批里会有重复的图文对（互为假负样本）；以前批 10 亿在采样器里空转。"""
    csv = write_csv_folder(tmp_path, [(f"{i}.png", f"第{i}张", png_bytes((30 * i, 0, 0))) for i in range(6)])
    rc, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "r", "--dataset", "csv", "--data-path", csv,
                     "--batch-size", "8")
    assert rc == 2 and "batch larger than dataset" in one_clear_line(err) and "--batch-size" in err
    assert not (tmp_path / "r").exists()


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """内存不够（大模型、大批）时 PyTorch 抛 RuntimeError：一行说明，退出码 1。"""
    import clipedu.trainer as tr

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setattr(tr, "_loop", oom)
    rc, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "r")
    assert rc == 1 and "out of memory" in one_clear_line(err) and "--batch-size" in err


# ---------------------------------------------------------------- 写输出目录的命令：同一套 --out 检查与锁

WRITERS = ["train", "shard", "index", "export"]


@pytest.fixture
def sources(tmp_path):
    csv = write_csv_folder(tmp_path / "src", [(f"{i}.png", f"第{i}张", png_bytes((30 * i, 0, 0))) for i in range(3)])
    return csv, csv.parent / "imgs"


def _writer(cmd: str, out, ckpt, sources) -> list:
    csv, images = sources
    return {"train": [*TRAIN, "--out", out],
            "shard": ["data", "shard", "--csv", csv, "--out", out],
            "index": ["index", "--checkpoint", ckpt, "--images", images, "--out", out, "--no-progress"],
            "export": ["export", "--checkpoint", ckpt, "--out", out, "--no-check"]}[cmd]


@pytest.mark.parametrize("cmd", WRITERS)
@pytest.mark.parametrize("kind, phrase", [("file", "output path is a file"), ("under_file", "under a file"),
                                          ("symlink_loop", "bad output path"), ("read_only", "not writable")])
def test_bad_out_is_one_line_for_every_writer(tmp_path, capsys, monkeypatch, ckpt, sources, cmd, kind, phrase):
    """以前 index/export 的 --out 是文件时报 “file exists” 且不提旗标，符号链接环是一条 RuntimeError。"""
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    elif kind == "under_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    elif kind == "symlink_loop":
        out.symlink_to(out)
    else:
        out.mkdir()
        out.chmod(0o555)
        if os.geteuid() == 0:  # root 不受权限位限制：模拟只读文件系统（access 返回 EROFS 的情形）
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p) == str(out) else real(p, m, **k))
    rc, _, err = cli(capsys, *_writer(cmd, out, ckpt, sources))
    assert rc == 2 and phrase in one_clear_line(err) and str(out) in err and "--out" in err


@pytest.mark.parametrize("cmd", WRITERS)
def test_a_busy_out_is_refused_by_every_writer(tmp_path, capsys, ckpt, sources, cmd):
    """两个 index（或 data shard、export）同时写一个目录会互删对方的文件、把分片混在一起：第二个被拒绝。"""
    out = tmp_path / "out"
    out.mkdir()
    # 持锁的是一个活着的进程（本进程的父进程）
    (out / ".clipedu.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                   "since": "2026-01-01 00:00:00", "argv": "clipedu index"}))
    rc, _, err = cli(capsys, *_writer(cmd, out, ckpt, sources))
    assert rc == 1 and "output directory is locked" in one_clear_line(err) and f"pid {os.getppid()}" in err
    assert sorted(p.name for p in out.iterdir()) == [".clipedu.lock"]  # 什么都没写


def test_index_and_eval_folders_must_be_directories(tmp_path, capsys, ckpt):
    """--images / --root 是文件、FIFO 或符号链接环：以前说 “不存在” 或抛 RuntimeError。"""
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name, phrase in (("file", "not a directory"), ("fifo", "not a directory"), ("loop", "bad directory")):
        for argv in (["index", "--checkpoint", ckpt, "--images", tmp_path / name, "--out", tmp_path / "ix"],
                     ["eval", "--checkpoint", ckpt, "--dataset", "imagefolder", "--root", tmp_path / name]):
            rc, _, err = cli(capsys, *argv)
            assert rc == 2 and phrase in one_clear_line(err) and name in err, err


# ---------------------------------------------------------------- serve：地址与端口

@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, ckpt):
    from clipedu.search.encoders import load_encoder
    from clipedu.search.index import build_index
    from clipedu.search.testing import make_gallery
    root = tmp_path_factory.mktemp("gallery")
    make_gallery(root / "images", 3)
    build_index(load_encoder(ckpt), root / "images", root / "ix", progress=False, log=lambda *a: None)
    return root / "ix"


def test_serve_reports_bad_host_and_busy_port_before_loading_the_model(capsys, ckpt, index_dir, monkeypatch):
    """以前：--host 写错时 uvicorn 自己打印一行英文并以 3 退出；端口被占用时是它的日志。"""
    import clipedu.search.encoders as enc
    monkeypatch.setattr(enc, "load_encoder", lambda *a, **k: pytest.fail("不该载入模型"))
    # 64 个字符的标签超过 DNS 上限 63：在本机就被拒绝，不用等 DNS 超时
    rc, _, err = cli(capsys, "serve", "--index", index_dir, "--checkpoint", ckpt, "--host", "a" * 64)
    assert rc == 2 and "--host" in one_clear_line(err) and "bad host" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc, _, err = cli(capsys, "serve", "--index", index_dir, "--checkpoint", ckpt, "--port", port)
    assert rc == 1 and f"--port {port}" in one_clear_line(err) and "address already in use" in err


def test_messages_name_flags_and_subcommands_that_exist(capsys):
    """以前：缺子命令时说 “required: command / data_command”（内部变量名），--out 写错时提示 “--out-dir”。"""
    from clipedu.config import TrainConfig
    rc, _, err = cli(capsys)
    assert rc == 2 and "{train,eval,data,index,serve,export}" in one_clear_line(err)
    rc, _, err = cli(capsys, "data")
    assert rc == 2 and "required: shard" in one_clear_line(err)
    with pytest.raises(ValueError, match="^--out（TrainConfig.out_dir）"):
        TrainConfig(out_dir="")
    with pytest.raises(ValueError, match="^TrainConfig.eps"):  # 没有命令行旗标的字段不编一个出来
        TrainConfig(eps=0.0)

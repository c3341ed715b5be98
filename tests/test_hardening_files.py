"""加固（issue 15）续：坏文件（中间被改坏的检查点、自称巨大模型的配置、没有配置的 safetensors、
超大的 tar 条目、名字像命令的分片）与 API 的 ``train(cfg)`` 守住输出目录。

一类问题一个测试，尽量从命令行入口进程内调用（见 cli_helpers.py）。
"""
import io
import json
import os
import tarfile

import pytest

from cli_helpers import TRAIN, cli, no_hang, one_clear_line  # noqa: F401
from realdata_fixtures import png_bytes, write_csv_folder

pytestmark = pytest.mark.usefixtures("no_hang")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from clipedu.search.testing import save_random_checkpoint
    from tiny import tiny_model_config
    return save_random_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", tiny_model_config())


# ---------------------------------------------------------------- API：train(cfg) 也不覆盖已有的训练

def test_api_train_refuses_a_used_out_dir_unless_resume_or_overwrite(tmp_path, data):
    """以前只有命令行拒绝；笔记本里 ``clipedu.train(cfg)`` 会悄悄换掉旧的 last.pt 与 log.jsonl。"""
    from clipedu.model_cache import train_cached
    from clipedu.trainer import train
    from tiny import tiny_train_config

    out = tmp_path / "run"
    train(tiny_train_config(out, steps=2, batch_size=8), train_dataset=data)
    before = (out / "log.jsonl").read_text()
    with pytest.raises(ValueError, match="output directory not empty") as e:
        train(tiny_train_config(out, steps=2, batch_size=8), train_dataset=data)
    assert "overwrite=True" in str(e.value) and 'resume="latest"' in str(e.value)
    assert (out / "log.jsonl").read_text() == before and not (out / ".clipedu.lock").exists()
    with pytest.raises(ValueError, match="output directory not empty"):  # 模型缓存的还原也守同一条规则
        train_cached(tiny_train_config(out, steps=2, batch_size=8), data, data_key="tiny-512")
    # 续训接着写；overwrite 先确认新配置能建起来，再删旧文件
    train(tiny_train_config(out, steps=3, batch_size=8, resume="latest"), train_dataset=data)
    assert [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(ValueError, match="batch larger than dataset"):
        train(tiny_train_config(out, steps=1, batch_size=1024, overwrite=True), train_dataset=data)
    assert (out / "last.pt").exists()  # 失败的新训练没有删掉旧训练
    history = train(tiny_train_config(out, steps=1, batch_size=8, overwrite=True), train_dataset=data)
    assert len(history) == 1 and len((out / "log.jsonl").read_text().splitlines()) == 1
    with pytest.raises(ValueError, match="conflicting"):
        tiny_train_config(out, resume="latest", overwrite=True)


# ---------------------------------------------------------------- 检查点：被改坏、自称巨大、没有配置

def test_checkpoint_damaged_in_the_middle_is_refused_by_crc(tmp_path, capsys, ckpt):
    """torch.load 不核对 zip 的 CRC：以前中间坏了 200 字节的检查点照样载入，评估出错误的数。"""
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2:len(data) // 2 + 200] = bytes(200)
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    for argv in (["eval", "--checkpoint", bad, "--eval-size", "8"],
                 [*TRAIN, "--out", tmp_path / "r", "--init-from", bad],
                 ["export", "--checkpoint", bad, "--out", tmp_path / "ex"]):
        rc, _, err = cli(capsys, *argv)
        line = one_clear_line(err)
        assert rc == 1 and "bad CRC" in line and "flipped.pt" in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "ex").exists()


def test_checkpoint_claiming_a_huge_model_is_refused_before_allocating(tmp_path, capsys, ckpt):
    """配置被改成宽 10^12：以前先去分配 128 TB 再报 “unexpected error”；现在在不占内存的骨架上比对形状。"""
    from clipedu.checkpoint import load_checkpoint, save_checkpoint
    obj = load_checkpoint(ckpt)
    obj["config"]["embed_dim"] = 10**12
    save_checkpoint(obj, tmp_path / "huge.pt")
    obj["config"] = {"vision": "x"}
    save_checkpoint(obj, tmp_path / "garbled.pt")
    for name, phrase in (("huge.pt", "does not match config"), ("garbled.pt", "invalid model config")):
        for argv in (["eval", "--checkpoint", tmp_path / name],
                     [*TRAIN, "--out", tmp_path / "r", "--init-from", tmp_path / name]):
            rc, _, err = cli(capsys, *argv)
            assert rc == 2 and phrase in one_clear_line(err), err


def test_clipedu_safetensors_without_config_as_init_from(tmp_path, capsys, ckpt):
    """以前 --init-from 一个 clipedu 导出的 .safetensors 按 OpenAI 约定推断出 0 个头：ZeroDivisionError。"""
    from safetensors.torch import save_file
    from clipedu.checkpoint import load_checkpoint
    state = {k: v.contiguous() for k, v in load_checkpoint(ckpt)["model"].items()}
    save_file(state, str(tmp_path / "bare.safetensors"))
    rc, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "r1", "--init-from", tmp_path / "bare.safetensors")
    assert rc == 2 and "without a stored config" in one_clear_line(err)
    data = (tmp_path / "bare.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    for argv in ([*TRAIN, "--out", tmp_path / "r2", "--init-from", tmp_path / "cut.safetensors"],
                 ["eval", "--checkpoint", tmp_path / "cut.safetensors"]):
        rc, _, err = cli(capsys, *argv)
        assert rc == 1 and "cut.safetensors" in one_clear_line(err) and "invalid safetensors file" in err


def test_corrupt_onnx_export_is_one_line(tmp_path, capsys):
    """导出目录的 clipedu-onnx.json 被截断（导出时被杀）：以前是一行 JSON 解析器的英文。"""
    export = tmp_path / "onnx"
    export.mkdir()
    (export / "clipedu-onnx.json").write_text('{"format": "clipedu-onnx", "image_mo')
    rc, _, err = cli(capsys, "index", "--checkpoint", export, "--backend", "onnx", "--images", tmp_path,
                     "--out", tmp_path / "ix", "--no-progress")
    assert rc == 1 and "corrupt ONNX export" in one_clear_line(err) and "onnx" in err


# ---------------------------------------------------------------- WebDataset：条目大小上限，不执行名字

def _shard(path, members: dict):
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_wds_member_over_the_cap_is_skipped_unread_and_counted(tmp_path, capsys, monkeypatch):
    """以前 tar 里的每个条目都被整个读进内存：一个几 GB 的条目就能吃光内存。"""
    import clipedu.data.wds as wds_mod
    monkeypatch.setattr(wds_mod, "MAX_MEMBER_BYTES", 4000)
    big = png_bytes((255, 0, 0), size=(400, 400), mode="RGB") + os.urandom(5000)  # 大于 4000 字节
    members = {}
    for i in range(8):
        members[f"{i:04d}.png"] = big if i < 2 else png_bytes((30 * i, 0, 0))
        members[f"{i:04d}.txt"] = f"第{i}张".encode()
    _shard(tmp_path / "shard-000000.tar", members)
    out = tmp_path / "run"
    rc, _, err = cli(capsys, *TRAIN, "--out", out, "--dataset", "wds", "--data-path", tmp_path / "shard-000000.tar",
                     "--max-bad-fraction", "0.5")
    assert rc == 0, err
    by_reason = json.loads((out / "metrics.json").read_text())["bad_samples"]["by_reason"]
    assert set(by_reason) == {"too_large"} and by_reason["too_large"] >= 2


def test_wds_shard_named_like_a_command_is_only_read(tmp_path, capsys, monkeypatch):
    """webdataset 的 gopen 把 “pipe:命令” 当 shell 命令执行：名字取自数据的分片列表就能运行代码。"""
    monkeypatch.chdir(tmp_path)
    name = "pipe:touch pwned; cat x.tar"
    _shard(tmp_path / name, {f"{i:04d}.{e}": (png_bytes((30 * i, 0, 0)) if e == "png" else f"第{i}张".encode())
                             for i in range(6) for e in ("png", "txt")})
    rc, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "run", "--dataset", "wds", "--data-path", name)
    assert rc == 0, err
    assert not (tmp_path / "pwned").exists()


def test_data_shard_out_named_like_a_command_is_only_a_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = write_csv_folder(tmp_path / "src", [(f"{i}.png", f"第{i}张", png_bytes((30 * i, 0, 0))) for i in range(3)])
    rc, _, err = cli(capsys, "data", "shard", "--csv", csv, "--out", "pipe:touch pwned;")
    assert rc == 0, err
    assert not (tmp_path / "pwned").exists() and (tmp_path / "pipe:touch pwned;" / "shard-000000.tar").is_file()



def test_fifos_inside_out_never_block_a_resume(tmp_path, capsys):
    """--resume latest 时，out 里名叫 ckpt_step1.pt 或 log.jsonl 的 FIFO 以前让训练永远等下去。"""
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "ckpt_step1.pt")
    os.mkfifo(out / "log.jsonl")
    rc, _, err = cli(capsys, *TRAIN, "--out", out, "--resume", "latest")
    assert "ckpt_step1.pt" in err and "skipping unreadable checkpoint" in err
    assert rc == 2 and "log.jsonl" in one_clear_line(err) and "not a regular file" in err


def test_shard_pattern_expanding_to_millions_is_refused_lazily(tmp_path, capsys, monkeypatch):
    """``{0..999999999}``：webdataset 的 braceexpand 先把 10 亿个名字放进列表，内存耗尽前一直无声无息。"""
    import clipedu.data.wds as wds_mod
    monkeypatch.setattr(wds_mod, "MAX_SHARDS", 1000)  # 上限本是 100 万；调小只为测得快
    rc, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "r", "--dataset", "wds",
                     "--data-path", str(tmp_path / "s-{000000000..999999999}.tar"))
    assert rc == 2 and "too many shards" in one_clear_line(err)
    assert list(wds_mod.expand_braces("d/{a,b}/s-{08..10}.tar")) == [
        "d/a/s-08.tar", "d/a/s-09.tar", "d/a/s-10.tar", "d/b/s-08.tar", "d/b/s-09.tar", "d/b/s-10.tar"]


def test_garbled_cifar_file_is_corrupt_not_an_attack(tmp_path, capsys, ckpt):
    """乱码的 batches.meta 以前被说成 “拒绝加载：文件要求执行 invalid load key”（恶意载荷的说法）。"""
    from realdata_fixtures import write_fake_cifar
    write_fake_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(b"x" + os.urandom(100))
    rc, _, err = cli(capsys, "eval", "--checkpoint", ckpt, "--dataset", "cifar10", "--root", tmp_path)
    line = one_clear_line(err)
    assert rc == 1 and "corrupt CIFAR file" in line and "batches.meta" in line and "unsafe" not in line


def test_image_that_decodes_to_too_many_pixels_is_skipped_before_decoding(tmp_path, capsys, monkeypatch):
    """几百 KB 的 PNG 能解出 1.4 亿像素（432 MB）：以前照样解码，还打印 PIL 的警告。上限本是 4000 万像素。"""
    import clipedu.data.robust as robust
    monkeypatch.setattr(robust, "MAX_IMAGE_PIXELS", 300)  # 20×20 = 400 个像素就算 “太大”
    rows = [(f"{i}.png", f"第{i}张", png_bytes((30 * i, 0, 0), size=(12, 12))) for i in range(7)]
    rows.append(("big.png", "大图", png_bytes((255, 0, 0), size=(20, 20))))
    csv = write_csv_folder(tmp_path, rows)
    rc, out, err = cli(capsys, "data", "shard", "--csv", csv, "--out", tmp_path / "sh", "--max-bad-fraction", "0.5")
    summary, _ = json.JSONDecoder().raw_decode(out)  # 摘要之后还有一行用法提示
    assert rc == 0 and summary["bad_samples"]["by_reason"] == {"too_large": 1}
    assert "Warning" not in err


def test_json_line_nested_too_deeply_costs_only_that_line(tmp_path, capsys):
    """一行 10 万层 “[”：json 递归超限抛 RecursionError，以前让整个训练（或续训读日志）以 “unexpected error” 结束。"""
    from realdata_fixtures import write_cnclip
    from clipedu.run_log import read_log
    deep = b"[" * 100_000
    images = {str(i): png_bytes((30 * i, 0, 0)) for i in range(8)}
    texts = [{"text_id": i, "text": f"第{i}张", "image_ids": [str(i)]} for i in range(8)]
    write_cnclip(tmp_path / "cn", "train", images, texts, extra_text_lines=[deep])
    out = tmp_path / "run"
    rc, _, err = cli(capsys, *TRAIN, "--out", out, "--dataset", "cn-clip", "--data-path", tmp_path / "cn",
                     "--max-bad-fraction", "0.5")
    assert rc == 0, err
    assert json.loads((out / "metrics.json").read_text())["bad_samples"]["by_reason"] == {"malformed_row": 1}
    with open(out / "log.jsonl", "ab") as f:
        f.write(deep + b"\n")
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2]

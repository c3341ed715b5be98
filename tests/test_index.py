"""clipedu index：预处理与 torchvision 一致、坏文件按原因计数、增量更新、续跑、原子替换与损坏检测。"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_fixtures import png_bytes, save_random_checkpoint, write_bad_files, write_shapes_gallery

from clipedu.data.transforms import eval_transform
from clipedu.search.encoders import CharTokenizer, load_encoder
from clipedu.search.images import preprocess
from clipedu.search.index import BadImageError, CorruptIndexError, build_index, load_index

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_encoder(save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"))


@pytest.fixture
def gallery(tmp_path):
    folder = tmp_path / "images"
    write_shapes_gallery(folder, 40)
    return folder


def _build(encoder, images, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda *a: None)
    return build_index(encoder, images, out, **kw)


@pytest.mark.parametrize("size", [(32, 32), (50, 20), (17, 61), (640, 480)])
def test_preprocess_matches_torchvision_eval_transform(size):
    rng = np.random.default_rng(sum(size))
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    want = eval_transform(32)(im).numpy()
    got = preprocess(im, 32)
    assert got.shape == want.shape == (3, 32, 32)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_char_tokenizer_matches_chinese_tokenizer():
    from clipedu import ChineseTokenizer

    tok = ChineseTokenizer(context_length=16)
    texts = ["红色的圆形", "ＡＢＣ１２３，全角", "", "很长" * 20, "未登录字符☃"]
    mine = CharTokenizer(**{k: v for k, v in tok.state_dict().items() if k != "type"})(texts)
    np.testing.assert_array_equal(mine, tok(texts).numpy())


def test_index_finds_the_exact_vectors_and_skips_bad_files(encoder, gallery, tmp_path):
    expected_bad = write_bad_files(gallery / "bad")
    (gallery / "notes.txt").write_text("不是图片")
    os.symlink("/etc/hostname", gallery / "link_out.png")
    report = _build(encoder, gallery, tmp_path / "idx", chunk_size=16, dtype="float32")
    assert report.count == 40 and report.embedded == 40
    assert dict(report.skipped) == {r: 1 for r in expected_bad.values()}
    assert report.ignored == {"symlink": 1, "not_image_extension": 1}
    index = load_index(tmp_path / "idx")
    assert [it["path"] for it in index.items] == sorted(it["path"] for it in index.items)
    assert all(not it["path"].startswith(("bad/", "link")) for it in index.items)
    # 每个向量都等于把那张图单独编码的结果，且已归一化
    i = 17
    one = encoder.encode_images(preprocess(Image.open(gallery / index.items[i]["path"]).convert("RGB"), 32)[None])
    np.testing.assert_allclose(index.embeddings[i], one[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    # 精确检索：与暴力 argsort 相同
    q = encoder.encode_texts(["红色的圆形", "蓝色的正方形"])
    scores, ids = index.search(q, 5)
    brute = np.argsort(-(q @ index.embeddings.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, brute)
    small = type(index)(index.root, index.embeddings, index.items, index.meta, block_rows=7)  # 分块路径
    np.testing.assert_array_equal(small.search(q, 5)[1], brute)
    assert index.search(q, 1000)[1].shape == (2, 40)


def test_strict_turns_a_skip_into_an_error(encoder, gallery, tmp_path):
    write_bad_files(gallery / "bad")
    with pytest.raises(BadImageError, match="strict"):
        _build(encoder, gallery, tmp_path / "idx", strict=True)
    assert not (tmp_path / "idx" / "index.json").exists()


def test_incremental_update_embeds_only_new_and_changed_files(encoder, gallery, tmp_path):
    out = tmp_path / "idx"
    _build(encoder, gallery, out, chunk_size=8)
    first = load_index(out)
    victim, changed = first.items[3]["path"], first.items[5]["path"]
    (gallery / victim).unlink()
    (gallery / changed).write_bytes(png_bytes((45, 100, 235)))
    (gallery / "new").mkdir()
    (gallery / "new" / "a.png").write_bytes(png_bytes((220, 40, 40)))
    report = _build(encoder, gallery, out, chunk_size=8)
    assert (report.embedded, report.kept, report.removed, report.count) == (2, 38, 2, 40)
    again = load_index(out)
    clean = _build(encoder, gallery, tmp_path / "clean", chunk_size=8)
    fresh = load_index(tmp_path / "clean")
    assert clean.count == 40 and again.items == fresh.items
    np.testing.assert_allclose(again.embeddings.astype(np.float32), fresh.embeddings.astype(np.float32), atol=2e-3)
    # 旧代的数据文件被删掉，目录里只剩一代
    assert len(list(out.glob("embeddings-*.npy"))) == 1 and not (out / ".partial").exists()
    assert _build(encoder, gallery, out).embedded == 0  # 什么都没变：一张也不重算


def test_corrupt_index_is_refused_and_not_modified(encoder, gallery, tmp_path):
    out = tmp_path / "idx"
    _build(encoder, gallery, out)
    emb = next(out.glob("embeddings-*.npy"))
    data = bytearray(emb.read_bytes())
    data[-5] ^= 0xFF
    emb.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CorruptIndexError, match="SHA-256"):
        load_index(out)
    (out / "index.json").write_text("{ not json")
    with pytest.raises(CorruptIndexError, match="index.json"):
        load_index(out)
    before["index.json"] = (out / "index.json").read_bytes()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_interrupted_build_leaves_the_old_index_and_resumes(encoder, gallery, tmp_path, monkeypatch):
    """在第 3 块时抛异常（模拟断电）：旧索引仍可读，.partial 里留着已完成的块，再跑只算剩下的。"""
    out = tmp_path / "idx"
    _build(encoder, gallery, out, chunk_size=8)
    old = load_index(out)
    for p in sorted(gallery.rglob("*.png"))[:30]:
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))  # 改了 30 张：4 块
    calls = []
    real = encoder.encode_images

    def crash_on_third(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(x)

    monkeypatch.setattr(encoder, "encode_images", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _build(encoder, gallery, out, chunk_size=8)
    assert load_index(out).items == old.items  # 旧索引完好
    assert len(list((out / ".partial").glob("chunk-*.json"))) == 2
    monkeypatch.setattr(encoder, "encode_images", real)
    report = _build(encoder, gallery, out, chunk_size=8)
    assert (report.chunks_total, report.chunks_reused, report.count) == (4, 2, 40)


@pytest.mark.slow
def test_kill_the_indexer_and_resume_equals_a_clean_build(tmp_path):
    """真的 SIGKILL 子进程：续跑复用已完成的块，结果与一次跑完逐位相同。"""
    images, ckpt = tmp_path / "images", save_random_checkpoint(tmp_path / "tiny.pt")
    write_shapes_gallery(images, 120)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def index_cmd(out, *extra):
        return [sys.executable, "-m", "clipedu", "index", "--checkpoint", str(ckpt), "--images", str(images),
                "--out", str(out), "--chunk-size", "10", "--no-progress", *extra]

    proc = subprocess.Popen(index_cmd(tmp_path / "idx", "--throttle", "0.5"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    partial, deadline = tmp_path / "idx" / ".partial", time.time() + 120
    while len(list(partial.glob("chunk-*.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(partial.glob("chunk-*.json")))
    assert 3 <= done < 12, f"应在中途被杀掉，已完成 {done} 块"
    assert not (tmp_path / "idx" / "index.json").exists()  # 没有半成品索引
    resumed = subprocess.run(index_cmd(tmp_path / "idx"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"复用已完成的块 {done}/12" in resumed.stdout
    clean = subprocess.run(index_cmd(tmp_path / "clean"), env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    a, b = load_index(tmp_path / "idx"), load_index(tmp_path / "clean")
    assert a.items == b.items
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


def test_index_cli_reports_user_errors_in_one_line(tmp_path):
    from clipedu.cli import main

    ckpt = save_random_checkpoint(tmp_path / "tiny.pt")
    assert main(["index", "--checkpoint", str(ckpt), "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "i")]) == 2
    assert main(["index", "--checkpoint", str(tmp_path / "missing.pt"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "i")]) == 2

"""近似索引（FAISS flat / IVF / HNSW）：与精确检索同一个接口，简单情形下 top-1 与精确检索相同；
被改坏或与当前索引不配套的 FAISS 文件被拒绝，并给出清楚的说明。"""
from __future__ import annotations

import hashlib
import json
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("faiss")

from serve_fixtures import ThreadServer  # noqa: E402

from clipedu.search.app import create_app  # noqa: E402
from clipedu.search.approx import (APPROX_FAISS, APPROX_META, ApproxIndexError,  # noqa: E402
                                   approx_is_current, build_approx, load_approx)
from clipedu.search.index import build_index, load_index  # noqa: E402

D = 16


class FakeEncoder:
    """不载入模型的编码器：图像 = 像素经固定随机投影后归一化；文本 = 按哈希挑一张图的向量。"""

    backend, fingerprint, image_size, embed_dim, inv_temperature = "fake", "f" * 64, 8, D, 100.0

    def __init__(self):
        self.proj = np.random.default_rng(0).standard_normal((3 * 8 * 8, D)).astype(np.float32)

    def encode_images(self, images):
        v = images.reshape(len(images), -1) @ self.proj
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_texts(self, texts):
        rng = np.random.default_rng(len(texts[0]))
        return self.encode_images(rng.standard_normal((len(texts), 3, 8, 8)).astype(np.float32))


def _noise_gallery(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


@pytest.fixture
def built(tmp_path):
    _noise_gallery(tmp_path / "images", 120)
    build_index(FakeEncoder(), tmp_path / "images", tmp_path / "idx", dtype="float32",
                progress=False, log=lambda *a: None)
    return tmp_path / "idx", load_index(tmp_path / "idx")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_approx_returns_the_exact_top1_on_an_easy_case(built, kind):
    """查询 = 图库向量加一点噪声：它自己就是唯一的明显最近邻，任何近似索引都该找到它。"""
    idx_dir, exact = built
    meta = build_approx(idx_dir, kind, nlist=2)
    assert meta["count"] == len(exact) and approx_is_current(idx_dir, kind)
    approx = load_approx(exact, idx_dir)
    rng = np.random.default_rng(1)
    targets = rng.choice(len(exact), 20, replace=False)
    q = exact.matrix()[targets] + 0.02 * rng.standard_normal((20, D)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    want_s, want_i = exact.search(q, 10)
    got_s, got_i = approx.search(q, 10)
    assert got_i.dtype == np.int64 and got_i.shape[0] == 20 and 1 <= got_i.shape[1] <= 10
    np.testing.assert_array_equal(got_i[:, 0], targets)
    np.testing.assert_array_equal(want_i[:, 0], targets)
    assert (np.diff(got_s, axis=1) <= 1e-6).all()                      # 按分数降序
    np.testing.assert_allclose(got_s[:, 0], want_s[:, 0], atol=1e-5)   # 分数仍是余弦相似度
    if kind == "flat":
        np.testing.assert_array_equal(got_i, want_i)
    assert len(approx) == len(exact) and approx.dim == D and approx.items is exact.items


def test_corrupt_faiss_file_is_refused_with_a_clear_error(built):
    idx_dir, exact = built
    build_approx(idx_dir, "hnsw")
    data = bytearray((idx_dir / APPROX_FAISS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (idx_dir / APPROX_FAISS).write_bytes(bytes(data))
    with pytest.raises(ApproxIndexError, match="SHA-256.*bad approximate index"):
        load_approx(exact, idx_dir)
    # 连 approx.json 里的 SHA-256 一起改成乱码对应的值：FAISS 自己读不出来，也是一条清楚的说明
    garbage = b"not a faiss index" * 10
    meta = json.loads((idx_dir / APPROX_META).read_text())
    meta["sha256"] = hashlib.sha256(garbage).hexdigest()
    (idx_dir / APPROX_FAISS).write_bytes(garbage)
    (idx_dir / APPROX_META).write_text(json.dumps(meta))
    with pytest.raises(ApproxIndexError, match="FAISS 读不出"):
        load_approx(exact, idx_dir)
    (idx_dir / APPROX_META).write_text("{")
    with pytest.raises(ApproxIndexError, match="读不懂"):
        load_approx(exact, idx_dir)


def test_approx_index_of_an_older_generation_is_refused(built, tmp_path):
    """索引更新过（多了图），旧的近似索引不配套：拒绝，并说明要重建。"""
    idx_dir, _ = built
    build_approx(idx_dir, "flat")
    _noise_gallery(tmp_path / "images" / "more", 5, seed=9)
    build_index(FakeEncoder(), tmp_path / "images", idx_dir, dtype="float32", progress=False, log=lambda *a: None)
    newer = load_index(idx_dir)
    assert not approx_is_current(idx_dir, "flat")
    with pytest.raises(ApproxIndexError, match="另一代向量.*--approx"):
        load_approx(newer, idx_dir)
    (idx_dir / APPROX_FAISS).unlink()
    with pytest.raises(ApproxIndexError, match="还没建过"):
        load_approx(newer, idx_dir)


def test_service_runs_on_the_approx_index(built):
    idx_dir, exact = built
    build_approx(idx_dir, "hnsw")
    approx = load_approx(exact, idx_dir, param=32)
    assert approx.param == 32 and approx.faiss_index.hnsw.efSearch == 32
    with ThreadServer(create_app(approx, FakeEncoder())) as server:
        q = urllib.parse.urlencode({"q": "红色的圆形", "k": 5})
        got = json.loads(urllib.request.urlopen(f"{server.url}/search?{q}", timeout=30).read())
        health = json.loads(urllib.request.urlopen(f"{server.url}/health", timeout=30).read())
    want = exact.search(FakeEncoder().encode_texts(["红色的圆形"]), 5)[1][0]
    assert [r["id"] for r in got["results"]][0] == want[0] and health["count"] == len(exact)


@pytest.mark.slow
def test_index_cli_builds_the_approx_index_once(tmp_path, capsys):
    """python -m clipedu index --approx hnsw：建好近似索引；再跑一次什么都没变，近似索引也不重建。"""
    from serve_fixtures import save_random_checkpoint, write_shapes_gallery

    from clipedu.cli import main

    ckpt = save_random_checkpoint(tmp_path / "tiny.pt")
    write_shapes_gallery(tmp_path / "images", 24)
    args = ["index", "--checkpoint", str(ckpt), "--images", str(tmp_path / "images"), "--out", str(tmp_path / "idx"),
            "--no-progress", "--approx", "hnsw", "--approx-param", "32"]
    assert main(args) == 0 and "近似索引 hnsw（查询参数 32）：24 个向量" in capsys.readouterr().out
    before = (tmp_path / "idx" / APPROX_FAISS).stat().st_mtime_ns
    assert main(args) == 0 and "已是最新" in capsys.readouterr().out
    assert (tmp_path / "idx" / APPROX_FAISS).stat().st_mtime_ns == before
    exact = load_index(tmp_path / "idx")
    approx = load_approx(exact, tmp_path / "idx")
    assert approx.kind == "hnsw" and approx.param == 32
    np.testing.assert_array_equal(approx.search(exact.matrix()[:5], 1)[1][:, 0], np.arange(5))
    (tmp_path / "idx" / APPROX_FAISS).write_bytes(b"broken")      # serve --approx 拒绝启动：退出码 2，一行说明
    assert main(["serve", "--index", str(tmp_path / "idx"), "--checkpoint", str(ckpt), "--approx"]) == 2
    assert "bad approximate index" in capsys.readouterr().err

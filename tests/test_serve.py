"""clipedu serve：JSON 接口的模式、坏输入一律 4xx、只服务索引里的文件、有界压测、损坏的索引拒绝启动。"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import ThreadServer, png_bytes, rss_mb, save_random_checkpoint, write_shapes_gallery

from clipedu.search.app import Limits, create_app, host_warning
from clipedu.search.encoders import load_encoder
from clipedu.search.index import build_index, load_index
from clipedu.search.loadtest import BAD_REQUESTS, plan_requests, run_load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    ckpt = save_random_checkpoint(base / "tiny.pt")
    write_shapes_gallery(base / "images", 60)
    (base / "outside.png").write_bytes(png_bytes())
    encoder = load_encoder(ckpt)
    build_index(encoder, base / "images", base / "idx", progress=False, log=lambda *a: None)
    index = load_index(base / "idx")
    with ThreadServer(create_app(index, encoder, Limits(max_upload_bytes=200_000))) as server:
        yield {"url": server.url, "port": server.port, "base": base, "ckpt": ckpt, "index": index, "encoder": encoder}


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def _post(url, body, headers=None):
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _raw(port, path, method="GET"):
    """不经 urllib 规范化、原样发出的请求路径（如 /image/../../etc/passwd）。"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path)
    r = conn.getresponse()
    return r.status, r.read()


def test_health_search_similar_classify_schemas(setup):
    url, index, enc = setup["url"], setup["index"], setup["encoder"]
    status, _, body = _get(url + "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["count"] == 60 and health["dim"] == 128
    assert health["backend"] == "torch"
    status, _, body = _get(url + "/search?" + urllib.parse.urlencode({"q": "红色的圆形", "k": 5}))
    data = json.loads(body)
    assert status == 200 and data["query"] == "红色的圆形" and data["k"] == 5 and len(data["results"]) == 5
    assert set(data["results"][0]) == {"rank", "id", "path", "score", "url"}
    # 与直接在索引上检索的结果一致，分数降序
    want = index.search(enc.encode_texts(["红色的圆形"]), 5)[1][0].tolist()
    assert [r["id"] for r in data["results"]] == want
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    img = (setup["base"] / "images" / index.items[7]["path"]).read_bytes()
    status, data = _post(url + "/similar?k=3", img)
    assert status == 200 and data["results"][0]["id"] == 7 and data["results"][0]["score"] > 0.99
    status, data = _post(url + "/classify?" + urllib.parse.urlencode({"labels": "红色的圆形，蓝色的正方形\n绿色的三角形"}), img)
    assert status == 200 and [set(r) for r in data["labels"]] == [{"label", "score", "prob"}] * 3
    assert abs(sum(r["prob"] for r in data["labels"]) - 1) < 1e-3
    status, ctype, body = _get(url + "/image/7")
    assert status == 200 and ctype == "image/png" and body == img
    status, ctype, body = _get(url + "/")
    assert status == 200 and "以文搜图" in body.decode() and "http" not in body.decode().replace("http-equiv", "")


@pytest.mark.parametrize("path,status", [
    ("/search", 400), ("/search?q=%20%20", 400), ("/search?q=a&k=0", 400), ("/search?q=a&k=-3", 400),
    ("/search?q=a&k=101", 400), ("/search?q=a&k=1e9", 400), ("/search?q=a&k=abc", 400),
    ("/search?q=" + urllib.parse.quote("长" * 201), 400), ("/image/60", 404), ("/image/99999999999999999999", 404), ("/image/-1", 404),
    ("/image/abc", 404), ("/image/../../etc/passwd", 404), ("/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
    ("/static/../index.py", 404), ("/static/%2e%2e%2fapp.py", 404), ("//etc/passwd", 404), ("/nope", 404),
])
def test_bad_get_requests_are_4xx_json(setup, path, status):
    got, body = _raw(setup["port"], path)
    assert got == status, body
    data = json.loads(body)
    assert data["status"] == status and "/" in data["error"] and "Traceback" not in data["error"]


def test_bad_uploads_are_4xx_json(setup):
    url = setup["url"]
    good = png_bytes()
    cases = [
        ("/similar", b"", 400), ("/similar", b"GIF89a not really", 415), ("/similar", b"plain text", 415),
        ("/similar", good[: len(good) // 2], 400), ("/similar", os.urandom(300_000), 413),
        ("/similar?k=0", good, 400), ("/classify", good, 400), ("/classify?labels=%2C%2C", good, 400),
        ("/classify?labels=" + ",".join(f"l{i}" for i in range(40)), good, 400),
        ("/classify?labels=" + urllib.parse.quote("长" * 70), good, 400),
    ]
    for path, body, status in cases:
        got, data = _post(url + path, body)
        assert got == status and data["status"] == status and data["error"], (path, got, data)
    import io

    from PIL import Image
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")
    assert _post(url + "/similar", bomb.getvalue())[0] == 413
    assert _post(url + "/search", good)[0] == 405
    assert _post(url + "/similar", good, {"Content-Length": "999999999"})[0] in (400, 413)


def test_serves_only_indexed_files_not_symlinks_out(setup):
    """把索引里的一张图换成指向文件夹外的符号链接：不再提供它。"""
    base, index = setup["base"], setup["index"]
    target = base / "images" / index.items[11]["path"]
    saved = target.read_bytes()
    target.unlink()
    os.symlink(base / "outside.png", target)
    try:
        status, _, body = _get(setup["url"] + "/image/11")
        assert status == 404 and b"image not available" in body
    finally:
        target.unlink()
        target.write_bytes(saved)
    assert _get(setup["url"] + "/image/11")[0] == 200


def test_host_warning_only_for_non_loopback():
    assert host_warning("127.0.0.1") is None and host_warning("::1") is None
    assert "0.0.0.0" in host_warning("0.0.0.0") and "non-loopback" in host_warning("0.0.0.0")


@pytest.mark.slow
def test_bounded_load_only_bad_requests_fail_and_memory_stays_flat(setup):
    """缩短版压测（基准 benchmarks/serve_load.py 是 2000 个请求、16 个并发）。"""
    images = [(setup["base"] / "images" / it["path"]).read_bytes() for it in setup["index"].items[:8]]
    run_load(setup["url"], plan_requests(60, images, bad_every=0), concurrency=8)  # 预热
    before = rss_mb()
    result = run_load(setup["url"], plan_requests(300, images, bad_every=25), concurrency=8)
    growth = rss_mb() - before
    assert result.unexpected == [], result.unexpected[:5]
    assert result.bad_ok == 12
    assert sum(len(v) for v in result.latencies_ms.values()) == 288
    assert growth < 40, f"常驻内存增长 {growth:.1f} MB"
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://example.com", [], 1)


def test_each_deliberate_bad_request_gets_its_status(setup):
    for method, path, body, status in BAD_REQUESTS:
        got = _post(setup["url"] + path, body)[0] if method == "POST" else _get(setup["url"] + path)[0]
        assert got == status, path


@pytest.mark.slow
def test_server_refuses_a_corrupt_index_and_leaves_it_alone(setup, tmp_path):
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(setup["base"] / "idx", idx)
    items = next(idx.glob("items-*.jsonl"))
    items.write_text(items.read_text().replace("sub1", "sub9", 1))
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in idx.iterdir()}
    r = subprocess.run([sys.executable, "-m", "clipedu", "serve", "--index", str(idx), "--checkpoint",
                        str(setup["ckpt"]), "--port", "9"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1 and "corrupt index" in r.stderr and "Traceback" not in r.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in idx.iterdir()} == digest


def test_index_built_with_another_checkpoint_is_refused(setup, tmp_path):
    other = load_encoder(save_random_checkpoint(tmp_path / "other.pt", seed=1))
    with pytest.raises(ValueError, match="different checkpoint"):
        create_app(setup["index"], other)

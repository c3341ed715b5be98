"""以文搜图页面在真实浏览器里：输入“红色的圆形”，前几名大多是红色的圆形；上传图片看近邻；零样本分类；截图。

几何图形世界的 500 张图写成一个图片文件夹，一个比 tiny-cpu 还小的 CLIP（宽 64、2 层）在会话夹具里现训 200 步
（批大小 64，空闲的 2 核上十几秒），
建索引、在回环地址上起服务，再由 Chromium 操作页面。截图在 _build/screenshots/search_*.png。
"""
from __future__ import annotations

import sys
from pathlib import Path
import pytest

from page_checks import open_guarded
from pages import SCREENSHOT_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/serve_fixtures.py
from serve_fixtures import ThreadServer, write_shapes_gallery  # noqa: E402

RED, CIRCLE, BLUE, SQUARE = 0, 0, 3, 1   # clipedu.data.shapes.COLORS / SHAPES 里的下标
TOP = 8


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """宽 64、2 层的小 CLIP 训练 200 步：足以让“红色的圆形”把红色圆形排到前面。整个会话只训练一次。"""
    import clipedu
    from clipedu.config import CLIPConfig, TextConfig, VisionConfig

    out = tmp_path_factory.mktemp("search_ckpt")
    model = CLIPConfig(embed_dim=64, vision=VisionConfig(arch="vit", image_size=32, patch_size=8, width=64, layers=2, heads=4),
                       text=TextConfig(context_length=32, width=64, heads=4, layers=2))
    clipedu.train(clipedu.TrainConfig(model=model, steps=200, batch_size=64, warmup_steps=20, eval_size=0,
                                      out_dir=str(out), progress=False, log_every=20))
    return out / "last.pt"


@pytest.fixture(scope="session")
def search_server(trained_checkpoint, tmp_path_factory):
    from clipedu.search.app import create_app
    from clipedu.search.encoders import load_encoder
    from clipedu.search.index import build_index, load_index

    base = tmp_path_factory.mktemp("search_gallery")
    gallery = write_shapes_gallery(base / "images", 500)
    encoder = load_encoder(trained_checkpoint)
    build_index(encoder, base / "images", base / "idx", progress=False, log=lambda *a: None)
    with ThreadServer(create_app(load_index(base / "idx"), encoder)) as server:
        yield server, base / "images", {rel: (c, s) for rel, c, s in gallery}


@pytest.fixture
def search_page(browser):
    context, page, report = open_guarded(browser, 1200)
    yield page, report
    context.close()


def _paths(page, container: str) -> list[str]:
    return page.locator(f"#{container} figure").evaluate_all("els => els.map(e => e.dataset.path)")


def test_text_search_upload_and_classify(search_server, search_page):
    server, images, classes = search_server
    page, report = search_page
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_function("() => document.getElementById('health').textContent.includes('500')")

    # 1. 以文搜图：前 8 名里大多数是红色的圆形
    page.fill("#k", str(TOP))
    page.fill("#query", "红色的圆形")
    page.click("#search-button")
    page.wait_for_function(f"() => document.querySelectorAll('#search-results figure').length === {TOP}")
    page.wait_for_function("() => [...document.querySelectorAll('#search-results img')].every(i => i.complete && i.naturalWidth > 0)")
    top = _paths(page, "search-results")
    hits = sum(classes[p] == (RED, CIRCLE) for p in top)
    page.screenshot(path=str(SCREENSHOT_DIR / "search_text.png"), full_page=True)
    assert hits >= TOP // 2 + 1, f"“红色的圆形”的前 {TOP} 名里只有 {hits} 个红色圆形：{top}"

    # 2. 以图搜图：上传索引里的一张蓝色正方形，它自己排第一，近邻大多同类
    query = next(p for p, cls in sorted(classes.items()) if cls == (BLUE, SQUARE))
    page.set_input_files("#upload", str(images / query))
    page.wait_for_function(f"() => document.querySelectorAll('#similar-results figure').length === {TOP}")
    neighbours = _paths(page, "similar-results")
    page.screenshot(path=str(SCREENSHOT_DIR / "search_similar.png"), full_page=True)
    assert neighbours[0] == query
    assert sum(classes[p] == (BLUE, SQUARE) for p in neighbours) >= TOP // 2 + 1, neighbours

    # 3. 零样本分类：四个标签里“蓝色的正方形”概率最高，条形宽度与概率一致
    page.click("#classify-button")
    page.wait_for_selector("#classify-results .bar-row")
    rows = page.locator("#classify-results .bar-row").evaluate_all(
        "els => els.map(e => [e.dataset.label, Number(e.dataset.prob), e.querySelector('.bar').style.width])")
    page.screenshot(path=str(SCREENSHOT_DIR / "search_classify.png"), full_page=True)
    assert rows[0][0] == "蓝色的正方形", rows
    assert abs(sum(r[1] for r in rows) - 1) < 1e-2
    assert all(abs(float(width.rstrip("%")) - 100 * prob) < 0.1 for _, prob, width in rows)  # 条形宽度 = 概率

    assert not report["external"], f"页面请求了外部主机：{report['external']}"
    assert not report["console"], f"控制台错误：{report['console']}"

    # 4. 坏输入：空查询在页面上显示中文错误，而不是空白或异常
    page.fill("#query", "   ")
    page.click("#search-button")
    page.wait_for_selector("#error:not([hidden])")
    assert "查询为空" in page.inner_text("#error")

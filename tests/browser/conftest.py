"""浏览器测试的夹具：回环 HTTP 服务器 + Debian 的 /usr/bin/chromium（由 Playwright 驱动，不下载浏览器）。"""
import os
from pathlib import Path

import pytest

from pages import HTML_DIR, LoopbackServer

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def site():
    if not (HTML_DIR / "index.html").is_file():
        pytest.fail(f"没有找到构建好的书：应有 {HTML_DIR}/index.html；请先运行 bash scripts/build_book.sh")
    with LoopbackServer(HTML_DIR) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"没有找到 Chromium：应在 {CHROMIUM}；请运行 WITH_BROWSER=1 bash scripts/setup.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()

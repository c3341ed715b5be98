"""在真实浏览器里检查每一章：中文排版、MathJax、mermaid、离线、无控制台错误，并截图。

由 scripts/test.sh 在构建完书之后运行；页面列表来自 _toc.yml，所以新章节自动纳入检查。
"""
from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from pages import HTML_DIR, LOCAL_HOSTS, SCREENSHOT_DIR, toc_files

PAGES = toc_files()

# 页面里真正显示给读者的文字（去掉代码块、脚本和已排版的公式）
VISIBLE_TEXT_JS = """() => {
  const root = document.querySelector('article.bd-article') || document.body;
  const clone = root.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .mermaid, .highlight').forEach(e => e.remove());
  return clone.textContent;
}"""

# 用页面正文字体在画布上画字：两个不同汉字若画出完全相同的像素，说明都落成了“豆腐块”
TOFU_JS = """(selector) => {
  const el = document.querySelector(selector);
  const font = getComputedStyle(el).fontSize + ' ' + getComputedStyle(el).fontFamily;
  const draw = (ch) => {
    const c = document.createElement('canvas'); c.width = 64; c.height = 64;
    const g = c.getContext('2d'); g.font = font.replace(/^[0-9.]+px/, '40px');
    g.fillStyle = '#000'; g.textBaseline = 'top'; g.fillText(ch, 4, 4);
    return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
  };
  const a = draw('模'), b = draw('态'), tofu = draw('\\uFFFF');
  return {font, distinct: a !== b, notTofu: a !== tofu && b !== tofu, inked: a.split(',').some(v => v !== '0')};
}"""

EXPAND_ALL_JS = """() => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  document.querySelectorAll('button.toggle-button').forEach(b => b.click());
}"""

MERMAID_JS = """() => Array.from(document.querySelectorAll('.mermaid')).map(e => !!e.querySelector('svg'))"""


def _url_is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in {"data", "blob", "about"} or parsed.hostname in LOCAL_HOSTS


@pytest.fixture
def page_report(browser, site):
    """打开一个新页面，记录外部请求、控制台错误和失败的本地请求。"""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    report = {"external": [], "console": [], "failed": []}

    def guard(route):
        if _url_is_local(route.request.url):
            route.continue_()
        else:
            report["external"].append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and report["console"].append(m.text))
    page.on("pageerror", lambda e: report["console"].append(f"pageerror: {e}"))
    page.on("response", lambda r: r.status >= 400 and report["failed"].append(f"{r.status} {r.url}"))
    page.on("requestfailed", lambda r: _url_is_local(r.url) and report["failed"].append(f"failed {r.url}"))
    yield page, report
    context.close()


def test_toc_pages_were_built():
    assert PAGES[0] == "book/preface"
    missing = [p for p in PAGES if not (HTML_DIR / f"{p}.html").is_file()]
    assert not missing, f"_toc.yml 里的这些页面没有生成 HTML：{missing}"


@pytest.mark.parametrize("doc", PAGES)
def test_page_renders_offline(doc, page_report, site):
    page, report = page_report
    page.goto(f"{site.url}/{doc}.html", wait_until="load")
    page.wait_for_load_state("networkidle")

    # 1. 中文已排版：标题有中文且占据了面积，且字形不是豆腐块
    h1 = page.locator("article h1").first
    title = h1.inner_text()
    assert re.search(r"[\u4e00-\u9fff]", title), f"{doc}: 标题里没有中文：{title!r}"
    box = h1.bounding_box()
    assert box and box["width"] > 20 and box["height"] > 10, f"{doc}: 标题没有排版出来：{box}"
    glyphs = page.evaluate(TOFU_JS, "article h1")
    assert glyphs["inked"] and glyphs["distinct"] and glyphs["notTofu"], f"{doc}: 中文显示为豆腐块（字体 {glyphs['font']}）"

    # 2. MathJax 排版了每个公式，没有留下原始的 $$ 或 \( \[
    n_math = page.locator(".math").count()
    if n_math:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("() => MathJax.startup.promise")
        n_mjx = page.locator("mjx-container").count()
        assert n_mjx >= n_math, f"{doc}: {n_math} 个公式只排版了 {n_mjx} 个"
        assert page.locator("mjx-merror").count() == 0, f"{doc}: MathJax 报告了 TeX 错误"
    text = page.evaluate(VISIBLE_TEXT_JS)
    for raw in ("$$", "\\(", "\\[", "\\begin{"):
        assert raw not in text, f"{doc}: 正文里留有未排版的 {raw!r}"

    # 3. 截图（展开答案之前，和读者第一次看到的一样）
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / f"{doc.replace('/', '__')}.png"), full_page=True)

    # 4. 每个 mermaid 块都变成了 SVG（包括折叠在答案里的：先全部展开，再逐个滚动到视野内触发渲染）
    if page.locator(".mermaid").count():
        page.evaluate(EXPAND_ALL_JS)
        for el in page.locator(".mermaid").all():
            el.scroll_into_view_if_needed()
        page.wait_for_function(f"() => ({MERMAID_JS})().every(Boolean)", timeout=30_000)

    # 5. 没有请求离开本机，没有控制台错误，没有 404
    assert not report["external"], f"{doc}: 页面请求了外部主机：{report['external']}"
    assert not report["console"], f"{doc}: 控制台错误：{report['console']}"
    assert not report["failed"], f"{doc}: 本地资源加载失败：{report['failed']}"


def test_chinese_search_finds_glossary(page_report, site):
    """中文搜索（jieba 分词的索引）能找到术语表里的词。"""
    page, report = page_report
    page.goto(f"{site.url}/search.html?q=对比学习", wait_until="load")
    page.wait_for_selector("#search-results li", timeout=30_000)
    hits = page.locator("#search-results li a").all_inner_texts()
    assert any("术语表" in h for h in hits), f"搜索“对比学习”没有命中术语表：{hits}"
    assert not report["external"] and not report["console"], report

"""在真实浏览器里检查每一章，读者看到的样子（issue 17）。

每页只打开两次：1280 px 的笔记本电脑和 390 px 的手机；深色模式与读者点主题按钮一样在同一页里切换。
- 1280 px：中文排版不是豆腐块；MathJax 排版了每个公式；每个 mermaid 块都画成了 SVG，按内容定大小；没有请求离开本机，
  没有控制台错误和 404；没有哪个代码块或输出块要横向滚动（scrollWidth <= clientWidth），没有元素比页面宽。
- 390 px：页面本身不横向滚动；公式与表格在自己的框里滚动；图片缩到屏幕以内。
- 截图存到 _build/screenshots/layout/：两种宽度 × 浅色/深色，整页。
页面列表来自 _toc.yml，所以新章节自动纳入检查。
"""
from __future__ import annotations

import re

import pytest

from page_checks import (BOXED_JS, ESCAPING_JS, EXPAND_ALL_JS, MERMAID_JS, MERMAID_SIZE_JS, SETTLE_JS, TOFU_JS, VISIBLE_TEXT_JS,
                         WIDE_BLOCKS_JS, open_guarded, set_dark)
from pages import HTML_DIR, SCREENSHOT_DIR, toc_files

PAGES = toc_files()
DESKTOP, PHONE = 1280, 390
SHOTS = SCREENSHOT_DIR / "layout"


def _open_page(browser, site, doc, width):
    """打开一页、等排版完成；返回 (context, page, report)。"""
    context, page, report = open_guarded(browser, width)
    page.goto(f"{site.url}/{doc}.html", wait_until="load")
    page.evaluate(SETTLE_JS)
    return context, page, report


def _shot(page, doc, width, mode):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{doc.replace('/', '__')}__{width}_{mode}.png"), full_page=True)


def _check_rendered(page, doc) -> list[str]:
    """中文、公式与 mermaid 都排版出来了；返回发现的问题。"""
    problems = []
    h1 = page.locator("article h1").first
    title = h1.inner_text()
    if not re.search(r"[\u4e00-\u9fff]", title):
        problems.append(f"标题里没有中文：{title!r}")
    box = h1.bounding_box()
    if not (box and box["width"] > 20 and box["height"] > 10):
        problems.append(f"标题没有排版出来：{box}")
    glyphs = page.evaluate(TOFU_JS, "article h1")
    if not (glyphs["inked"] and glyphs["distinct"] and glyphs["notTofu"]):
        problems.append(f"中文显示为豆腐块（字体 {glyphs['font']}）")
    n_math = page.locator(".math").count()
    n_mjx = page.locator("mjx-container").count()
    if n_mjx < n_math:
        problems.append(f"{n_math} 个公式只排版了 {n_mjx} 个")
    if page.locator("mjx-merror").count():
        problems.append("MathJax 报告了 TeX 错误")
    text = page.evaluate(VISIBLE_TEXT_JS)
    problems += [f"正文里留有未排版的 {raw!r}" for raw in ("$$", "\\(", "\\[", "\\begin{") if raw in text]
    return problems


def _check_mermaid_in_solutions(page) -> list[str]:
    """折叠在答案里的 mermaid 也要画出来：全部展开，逐个滚到视野内触发渲染。"""
    if not page.locator(".mermaid").count():
        return []
    page.evaluate(EXPAND_ALL_JS)
    for el in page.locator(".mermaid").all():
        el.scroll_into_view_if_needed()
    try:
        page.wait_for_function(f"() => ({MERMAID_JS})().every(Boolean)", timeout=30_000)
    except Exception:  # noqa: BLE001 - 超时就报告哪些没画出来
        return [f"mermaid 没有画成 SVG：{page.evaluate(MERMAID_JS)}"]
    return []


def test_toc_pages_were_built():
    assert PAGES[0] == "book/preface"
    missing = [p for p in PAGES if not (HTML_DIR / f"{p}.html").is_file()]
    assert not missing, f"_toc.yml 里的这些页面没有生成 HTML：{missing}"


@pytest.mark.parametrize("doc", PAGES)
def test_page_desktop(doc, browser, site):
    """1280 px：排版、离线、代码不横向滚动；浅色与深色整页截图。"""
    context, page, report = _open_page(browser, site, doc, DESKTOP)
    try:
        problems = _check_rendered(page, doc)
        _shot(page, doc, DESKTOP, "light")   # 展开答案之前，和读者第一次看到的一样
        wide = page.evaluate(WIDE_BLOCKS_JS)
        if wide:
            problems.append("这些代码/输出块要横向滚动：\n  " + "\n  ".join(wide))
        esc = page.evaluate(ESCAPING_JS)
        if esc["scroll"] > esc["vw"] or esc["out"]:
            problems.append(f"有元素比页面宽：{esc}")
        problems += page.evaluate(MERMAID_SIZE_JS)
        set_dark(page, True)
        _shot(page, doc, DESKTOP, "dark")
        set_dark(page, False)
        problems += _check_mermaid_in_solutions(page)
        page.wait_for_load_state("networkidle")
        problems += [f"{k}: {v}" for k, v in (("页面请求了外部主机", report["external"]),
                                               ("控制台错误", report["console"]),
                                               ("本地资源加载失败", report["failed"])) if v]
        assert not problems, f"{doc}（1280 px）：\n" + "\n".join(problems)
    finally:
        context.close()


@pytest.mark.parametrize("doc", PAGES)
def test_page_phone(doc, browser, site):
    """390 px：页面不横向滚动，宽公式与宽表格在自己的框里滚动，图片缩到屏幕以内；浅色与深色截图。"""
    context, page, _ = _open_page(browser, site, doc, PHONE)
    try:
        _shot(page, doc, PHONE, "light")
        esc = page.evaluate(ESCAPING_JS)
        assert esc["scroll"] <= esc["vw"], f"{doc}: 390 px 下整页横向滚动：{esc}"
        assert not esc["out"], f"{doc}: 390 px 下有元素超出页面：{esc['out']}"
        bad = page.evaluate(BOXED_JS)
        assert not bad, f"{doc}: 390 px 下：{bad}"
        set_dark(page, True)
        _shot(page, doc, PHONE, "dark")
    finally:
        context.close()


@pytest.mark.parametrize("doc", [PAGES[0], "notebooks/04_infonce"])
def test_phone_navigation(doc, browser, site):
    """390 px：汉堡按钮打开目录，目录里的链接能跳到另一章；页脚有上一页/下一页。"""
    context, page, _ = open_guarded(browser, PHONE)
    try:
        page.goto(f"{site.url}/{doc}.html", wait_until="load")
        # 页面里有两个 .primary-toggle（顶栏与正文页眉），手机上只显示其中一个
        toggle = page.locator(".primary-toggle:visible").first
        assert toggle.is_visible(), f"{doc}: 手机宽度下看不到打开目录的按钮"
        toggle.click()
        # pydata 主题在手机上把侧栏放进一个 <dialog> 里弹出
        menu = "dialog a.reference.internal:visible, .bd-sidebar-primary a.reference.internal:visible"
        link = page.locator(menu, has_text="背景介绍").first
        link.wait_for(state="visible", timeout=5_000)
        box = link.bounding_box()
        assert box and 0 <= box["x"] and box["x"] + box["width"] <= PHONE, f"{doc}: 目录链接在屏幕外：{box}"
        link.click()
        page.wait_for_url("**/ch01_background.html", timeout=10_000)
        assert page.locator(".prev-next-area a").count() >= 1, "页脚没有上一页/下一页链接"
    finally:
        context.close()


@pytest.mark.parametrize("query", ["对比学习", "零样本分类"])
def test_chinese_search_finds_body_text(query, browser, site):
    """多字的中文查询按索引的词表切开（book/_assets/zh-search.js）：不只命中标题，也命中正文里用到它的各章。"""
    context, page, report = open_guarded(browser)
    try:
        page.goto(f"{site.url}/search.html?q={query}", wait_until="load")
        page.wait_for_selector("#search-results li", timeout=30_000)
        # 结果是一条条追加的；摘要里出现页数才算列完
        page.wait_for_function("() => /\\d/.test(document.querySelector('#search-results .search-summary')"
                               "?.textContent || '')", timeout=30_000)
        hits = page.locator("#search-results li a").all_inner_texts()
        if query == "对比学习":
            assert any("术语表" in h for h in hits), f"搜索“{query}”没有命中术语表：{hits}"
        assert len(hits) >= 4, f"搜索“{query}”只命中 {len(hits)} 页：{hits}"
        assert not report["external"] and not report["console"], report
    finally:
        context.close()

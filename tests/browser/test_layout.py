"""读者看到的版面：1280 px 的笔记本电脑与 390 px 的手机，浅色与深色模式（见 issue 17）。

- 1280 px：没有哪个代码块或输出块要横向滚动（scrollWidth <= clientWidth），没有元素比页面宽。
- 390 px：页面本身不横向滚动；公式与表格在自己的框里滚动；图片缩到版心以内；导航菜单能打开并跳转。
- 每页存四张整页截图到 _build/screenshots/layout/：两种宽度 × 浅色/深色。
"""
from __future__ import annotations

import pytest

from pages import SCREENSHOT_DIR, toc_files

PAGES = toc_files()
DESKTOP, PHONE = 1280, 390
SHOTS = SCREENSHOT_DIR / "layout"

# 等 MathJax 排完版、mermaid 画完图（否则量到的是排版前的宽度）
SETTLE_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const t0 = Date.now();
  while (Date.now() - t0 < 15000) {
    const m = Array.from(document.querySelectorAll('.mermaid'));
    if (m.every(e => e.querySelector('svg') || !e.offsetParent)) break;
    await new Promise(r => setTimeout(r, 100));
  }
  await document.fonts.ready;
}"""

# 代码与输出块：可见且内容比框宽的（mermaid 的 pre 里是 SVG，另由“元素不超出页面”检查）
WIDE_BLOCKS_JS = """() => {
  const sel = 'article pre:not(.mermaid), article .cell_output, article .output';
  return Array.from(document.querySelectorAll(sel))
    .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.tagName.toLowerCase()}.${e.className}: ${e.scrollWidth}>${e.clientWidth} px: `
              + JSON.stringify(e.textContent.trim().split('\\n')
                  .reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 90)));
}"""

# 比页面宽、且不在某个会裁剪或滚动的祖先框里的元素（这种元素会把整页撑宽）
ESCAPING_JS = """() => {
  const vw = document.documentElement.clientWidth;
  // 被某个祖先裁剪或滚动的，以及固定定位的（如手机上收在屏幕外的侧栏），都不会撑宽页面
  const contained = (e) => {
    if (getComputedStyle(e).position === 'fixed') return true;
    for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
      const cs = getComputedStyle(p);
      if (cs.overflowX !== 'visible' || cs.position === 'fixed') return true;
    }
    return false;
  };
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (!e.offsetParent || getComputedStyle(e).visibility === 'hidden') continue;
    const r = e.getBoundingClientRect();
    if (r.width === 0 || (r.right <= vw + 1 && r.left >= -1)) continue;
    if (contained(e)) continue;
    out.push(`${e.tagName.toLowerCase()}.${e.className && e.className.baseVal === undefined ? e.className : ''}`
             + ` [${Math.round(r.left)}, ${Math.round(r.right)}] > ${vw} px`);
  }
  return {scroll: document.documentElement.scrollWidth, vw, out: out.slice(0, 10)};
}"""

# 手机上：比屏幕宽的公式和表格，必须有一个不比屏幕宽、可横向滚动的祖先框
BOXED_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const bad = [];
  for (const e of document.querySelectorAll('mjx-container[display="true"], article table, article img')) {
    if (!e.offsetParent) continue;
    const w = e.getBoundingClientRect().width;
    if (w <= vw) continue;
    if (e.tagName === 'IMG') { bad.push(`img ${e.getAttribute('src')} ${Math.round(w)} px`); continue; }
    let p = e.parentElement, ok = false;
    for (; p && p !== document.body; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if ((o === 'auto' || o === 'scroll') && p.getBoundingClientRect().width <= vw + 1) { ok = true; break; }
    }
    if (!ok) bad.push(`${e.tagName.toLowerCase()} ${Math.round(w)} px 没有自己的滚动框`);
  }
  return bad;
}"""


def _open(browser, site, doc, width, dark=False):
    context = browser.new_context(viewport={"width": width, "height": 900}, locale="zh-CN",
                                  color_scheme="dark" if dark else "light")
    if dark:
        context.add_init_script("localStorage.setItem('mode', 'dark'); localStorage.setItem('theme', 'dark');")
    # 书是离线的：任何外部请求直接拒绝，免得等网络超时
    context.route("**/*", lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort())
    page = context.new_page()
    page.goto(f"{site.url}/{doc}.html", wait_until="load")
    page.evaluate(SETTLE_JS)
    return context, page


def _shot(page, doc, width, mode):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{doc.replace('/', '__')}__{width}_{mode}.png"), full_page=True)


@pytest.mark.parametrize("doc", PAGES)
def test_desktop_code_fits(doc, browser, site):
    """1280 px：代码、输出和整页都不横向滚动；顺便存浅色与深色截图。"""
    context, page = _open(browser, site, doc, DESKTOP)
    try:
        _shot(page, doc, DESKTOP, "light")
        wide = page.evaluate(WIDE_BLOCKS_JS)
        assert not wide, f"{doc}: 1280 px 下这些代码/输出块要横向滚动：\n" + "\n".join(wide)
        esc = page.evaluate(ESCAPING_JS)
        assert esc["scroll"] <= esc["vw"] and not esc["out"], f"{doc}: 1280 px 下有元素比页面宽：{esc}"
    finally:
        context.close()
    context, page = _open(browser, site, doc, DESKTOP, dark=True)
    try:
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        _shot(page, doc, DESKTOP, "dark")
    finally:
        context.close()


@pytest.mark.parametrize("doc", PAGES)
def test_phone_page_does_not_scroll(doc, browser, site):
    """390 px：页面不横向滚动，宽公式与宽表格在自己的框里滚动，图片缩到屏幕以内。"""
    for dark in (False, True):
        context, page = _open(browser, site, doc, PHONE, dark=dark)
        try:
            _shot(page, doc, PHONE, "dark" if dark else "light")
            if dark:
                continue
            esc = page.evaluate(ESCAPING_JS)
            assert esc["scroll"] <= esc["vw"], f"{doc}: 390 px 下整页横向滚动：{esc}"
            assert not esc["out"], f"{doc}: 390 px 下有元素超出页面：{esc['out']}"
            bad = page.evaluate(BOXED_JS)
            assert not bad, f"{doc}: 390 px 下：{bad}"
        finally:
            context.close()


@pytest.mark.parametrize("doc", [PAGES[0], "notebooks/04_infonce"])
def test_phone_navigation(doc, browser, site):
    """390 px：汉堡按钮打开目录，目录里的链接能跳到另一章；页脚有上一页/下一页。"""
    context, page = _open(browser, site, doc, PHONE)
    try:
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

"""浏览器测试共用的页面工具：只许访问本机的页面（记录外部请求、控制台错误、失败的请求），以及在页面里运行的检查脚本。"""
from __future__ import annotations

from urllib.parse import urlparse

from pages import LOCAL_HOSTS


def url_is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in {"data", "blob", "about", "file"} or parsed.hostname in LOCAL_HOSTS


def open_guarded(browser, width: int = 1280, height: int = 900, allowed=url_is_local):
    """新开一个上下文与页面：``allowed(url)`` 为假的请求一律拒绝并记下（默认只许本机）；返回 (context, page, report)。"""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    report = {"external": [], "console": [], "failed": []}

    def guard(route):
        if allowed(route.request.url):
            route.continue_()
        else:
            report["external"].append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and report["console"].append(m.text))
    page.on("pageerror", lambda e: report["console"].append(f"pageerror: {e}"))
    page.on("response", lambda r: r.status >= 400 and report["failed"].append(f"{r.status} {r.url}"))
    page.on("requestfailed", lambda r: allowed(r.url) and report["failed"].append(f"failed {r.url} {r.failure}"))
    return context, page, report


def set_dark(page, dark: bool) -> None:
    """与读者点主题按钮一样切换深浅色（pydata 主题看 <html> 上的 data-theme 与 data-mode）。"""
    mode = "dark" if dark else "light"
    page.evaluate(f"() => {{ const d = document.documentElement.dataset; d.theme = '{mode}'; d.mode = '{mode}'; }}")
    page.wait_for_function(f"() => document.documentElement.dataset.theme === '{mode}'")


# 等 MathJax 排完版、mermaid 画完图、字体载入（否则量到的是排版前的宽度）。
# mermaid 图要滚到视野里才画；画好之前只有一个 viewBox 为 0 的占位 SVG，所以逐个滚过去，等真正的 viewBox 出现。
SETTLE_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const drawn = (e) => { const s = e.querySelector('svg'); return s && s.viewBox.baseVal && s.viewBox.baseVal.width > 0; };
  const t0 = Date.now();
  for (const e of document.querySelectorAll('.mermaid')) {
    if (!e.offsetParent) continue;
    e.scrollIntoView();
    while (!drawn(e) && Date.now() - t0 < 20000) await new Promise(r => setTimeout(r, 100));
  }
  window.scrollTo(0, 0);
  await document.fonts.ready;
}"""

# mermaid 图按内容定大小：缩放到版心后字不能小于原来的 80 %（图太宽），框也不能比图高出一大截（留白）
MERMAID_SIZE_JS = """() => Array.from(document.querySelectorAll('.mermaid')).filter(e => e.offsetParent).map(e => {
  const s = e.querySelector('svg'); if (!s) return 'mermaid 没有 SVG';
  const vb = s.viewBox.baseVal, r = s.getBoundingClientRect(), box = e.getBoundingClientRect();
  if (!vb || vb.width === 0) return 'mermaid 没有画出来';
  const scale = r.width / vb.width;
  if (scale < 0.8) return `mermaid 图 ${Math.round(vb.width)} px 宽，缩到 ${Math.round(r.width)} px（字缩小到 ${Math.round(100 * scale)} %）`;
  if (box.height > r.height + 80) return `mermaid 图高 ${Math.round(r.height)} px，框高 ${Math.round(box.height)} px（上下空白太多）`;
  return '';
}).filter(Boolean)"""

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

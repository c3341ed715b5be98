"""离线包与笔记本下载：解压 _build/clipedu-book-offline.zip，从 file:// 打开网页检查搜索、公式与流程图。

由 scripts/test.sh 在打好离线包之后运行（python scripts/make_offline.py）。离线包里的网页改了哪三处、
为什么要改，见 scripts/make_offline.py 的说明；这里检查的是读者双击 index.html 之后真正看到的：

- 公式由 MathJax 排好（SVG 输出，不依赖网页字体）；
- 每个 mermaid 块里都有画好的 SVG；
- 搜索能找到结果，且控制台没有报错、没有失败的请求、没有访问外部主机；
- 包里的笔记本与仓库一致、wheel 含 clipedu 的全部模块、说明里有离线安装的两步命令；
- 网页版每个笔记本页面的“下载 .ipynb”给的是不带输出、单元与仓库相同的笔记本。
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from page_checks import open_guarded
from pages import HTML_DIR, ROOT, SCREENSHOT_DIR, toc_files

ZIP = ROOT / "_build" / "clipedu-book-offline.zip"
TOP = "clipedu-book-offline"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK_PAGES = [doc for doc in toc_files() if doc.startswith("notebooks/")]

PAGE_STATE_JS = """() => ({
  mathjax: document.querySelectorAll('mjx-container').length,
  mathjaxSvg: document.querySelectorAll('mjx-container svg').length,
  mathjaxErrors: document.querySelectorAll('mjx-merror').length,
  mermaid: Array.from(document.querySelectorAll('.mermaid')).map(e => !!e.querySelector('svg')),
})"""


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """解压后的离线包根目录。"""
    if not ZIP.is_file():
        pytest.fail(f"没有找到离线包 {ZIP.relative_to(ROOT)}：请先运行 python scripts/make_offline.py")
    dest = tmp_path_factory.mktemp("offline")
    with zipfile.ZipFile(ZIP) as zf:
        bad = [n for n in zf.namelist() if not n.startswith(f"{TOP}/") or ".." in Path(n).parts]
        assert not bad, f"离线包里有不在 {TOP}/ 下的文件：{bad[:5]}"
        zf.extractall(dest)
    return dest / TOP


@pytest.fixture
def file_page(browser):
    """打开新页面；记录控制台错误、失败的请求和任何非 file:// 的请求（一律拦下）。"""
    context, page, report = open_guarded(
        browser, allowed=lambda url: urlparse(url).scheme in {"file", "data", "blob", "about"})
    yield page, report
    context.close()


def test_archive_contents(offline):
    """网页、与仓库逐字节相同的笔记本、clipedu 的 wheel、说明；构建过 PDF 就有 PDF。"""
    assert (offline / "html" / "index.html").is_file()
    assert sorted(p.name for p in (offline / "notebooks").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    changed = [p.name for p in NOTEBOOKS if (offline / "notebooks" / p.name).read_bytes() != p.read_bytes()]
    assert not changed, f"离线包里的笔记本与仓库不同：{changed}"
    for built, name in ((ROOT / "_build" / "pdf" / "book.pdf", "book.pdf"),
                        (ROOT / "_build" / "student" / "pdf" / "book.pdf", "book-student.pdf")):
        if built.is_file():
            assert (offline / "pdf" / name).read_bytes() == built.read_bytes(), f"离线包里的 pdf/{name} 不是最新构建的"
    guide = (offline / "离线使用说明.md").read_text(encoding="utf-8")
    for needed in ("pip download", "--no-index", "--find-links", "http.server", "index.html"):
        assert needed in guide, f"离线使用说明里缺少 {needed}"


def test_wheel_has_every_module(offline):
    """wheel 里有 clipedu 的每个模块和以文搜图服务的静态文件（package-data），装上就能跑笔记本。"""
    wheels = list((offline / "wheels").glob("clipedu-*-py3-none-any.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "clipedu").rglob("*.py")}
    expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "clipedu" / "search" / "static").glob("*")
                 if p.suffix in {".html", ".js", ".css"}}
    assert not expected - names, f"wheel 里缺少：{sorted(expected - names)[:10]}"
    assert any(n.endswith("entry_points.txt") for n in names), "wheel 里没有 clipedu 命令行入口"


# 有公式、有 mermaid 图、有两者的页面
FILE_PAGES = ["book/preface", "book/ch03_clip", "notebooks/04_infonce", "book/ch05_project"]


@pytest.mark.parametrize("doc", FILE_PAGES)
def test_page_from_file_url(doc, offline, file_page):
    page, report = file_page
    page.goto((offline / "html" / f"{doc}.html").as_uri(), wait_until="load")
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=20000)
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    state = page.evaluate(PAGE_STATE_JS)
    source = next(p for p in (ROOT / f"{doc}.md", ROOT / f"{doc}.ipynb") if p.is_file()).read_text(encoding="utf-8")
    if "$" in source:
        assert state["mathjax"] > 0 and state["mathjaxSvg"] == state["mathjax"], f"{doc}: 公式没有排好：{state}"
        assert state["mathjaxErrors"] == 0, f"{doc}: MathJax 报了公式错误"
    if "{mermaid}" in source:
        assert state["mermaid"] and all(state["mermaid"]), f"{doc}: mermaid 图没有画出来：{state['mermaid']}"
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    if state["mermaid"]:
        page.locator(".mermaid").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOT_DIR / f"offline-{doc.replace('/', '-')}.png"))
    assert not report["external"], f"{doc}: 离线页面访问了外部主机：{report['external'][:5]}"
    assert not report["failed"], f"{doc}: 有加载失败的本地文件：{report['failed'][:5]}"
    assert not report["console"], f"{doc}: 控制台报错：{report['console'][:5]}"


@pytest.mark.parametrize("query, expected", [("温度", "notebooks/04_infonce"), ("检查点", "book/ch05_project")])
def test_search_from_file_url(query, expected, offline, file_page):
    """从 file:// 打开的搜索页能找到结果（中文分词），结果链接指向书里的页面。"""
    page, report = file_page
    page.goto((offline / "html" / "search.html").as_uri() + f"?q={query}", wait_until="load")
    page.wait_for_selector("#search-results ul li a", timeout=20000)
    page.wait_for_function("() => !document.querySelector('#search-results').innerText.includes('正在搜索')",
                           timeout=20000)
    links = page.eval_on_selector_all("#search-results ul li a", "els => els.map(e => e.getAttribute('href'))")
    assert any(expected in (href or "") for href in links), f"搜索“{query}”没有找到 {expected}：{links[:10]}"
    page.screenshot(path=str(SCREENSHOT_DIR / f"offline-search-{len(query)}.png"))
    assert not report["failed"] and not report["console"], f"搜索页报错：{report}"


@pytest.mark.parametrize("doc", NOTEBOOK_PAGES)
def test_notebook_download_has_no_outputs(doc, browser, site):
    """网页版每个笔记本页面的“下载 .ipynb”：不带输出、单元与仓库里的笔记本相同。"""
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(f"{site.url}/{doc}.html", wait_until="domcontentloaded")
        hrefs = page.eval_on_selector_all(".dropdown-download-buttons a[href$='.ipynb']",
                                          "els => els.map(e => e.href)")
        assert hrefs, f"{doc}: 页面上没有下载 .ipynb 的按钮"
        response = page.request.get(hrefs[0])
        assert response.ok, f"{doc}: 下载失败 {response.status} {hrefs[0]}"
        nb = json.loads(response.text())
    finally:
        context.close()
    repo = json.loads((ROOT / f"{doc}.ipynb").read_text(encoding="utf-8"))
    outputs = [i for i, c in enumerate(nb["cells"]) if c.get("outputs") or c.get("execution_count")]
    assert not outputs, f"{doc}: 下载的笔记本里第 {outputs[:5]} 个单元带着输出"
    assert [("".join(c["source"]), c["cell_type"]) for c in nb["cells"]] == \
           [("".join(c["source"]), c["cell_type"]) for c in repo["cells"]], f"{doc}: 下载的笔记本与仓库里的单元不同"
    assert (HTML_DIR / "_sources" / f"{doc}.ipynb").stat().st_size < 4 * (ROOT / f"{doc}.ipynb").stat().st_size

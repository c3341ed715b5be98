"""把一张 mermaid 图离线画成 PDF（或 SVG），供 PDF 版与离线包使用（见教学指南 sec-teaching-editions）。

    python book/_ext/mermaid_pdf.py --vendor book/_vendor/mermaid -i 图.mmd -o 图.pdf [--config '{...}']

用的是 HTML 版同一份 mermaid（setup.sh 复制到 book/_vendor/ 的 ESM 包）和系统的 Chromium
（Playwright 驱动，不下载浏览器）。命令行与 mermaid-cli 的 ``mmdc -i … -o …`` 相同，
所以 sphinxcontrib-mermaid 可以直接把它当作 ``mermaid_cmd``；不用 npm 的 mermaid-cli，
是为了不多装一个 puppeteer 与 300 多 MB 的 node_modules，并保证两个版本画的是同一张图。
"""
from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
_ORIGIN = "http://mermaid.local"   # 虚构的主机：请求由 page.route 从 --vendor 目录直接回答，不出本机

_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<style>html,body{margin:0;padding:0;background:#fff}#out{display:inline-block;padding:4px}</style>
</head><body><div id="out"></div></body></html>"""

_RENDER_JS = """async ([code, config, id]) => {
  const {default: mermaid} = await import('/mermaid.esm.min.mjs');
  mermaid.initialize({...config, startOnLoad: false});
  const {svg} = await mermaid.render(id, code);
  const out = document.getElementById('out');
  out.innerHTML = svg;
  await document.fonts.ready;
  const box = out.getBoundingClientRect();
  return {svg, width: Math.ceil(box.width), height: Math.ceil(box.height)};
}"""


def static_config(config: dict) -> dict:
    """预先画好的图一律用 SVG 的 <text> 标签（htmlLabels: false）。

    默认的 HTML 标签放在 foreignObject 里，量尺寸用的是画图时这一页的 CSS；图插进书页以后，
    书页的行高等样式会让第二行文字被框裁掉。<text> 标签不受所在页面的 CSS 影响，PDF 里也是真正的文字。
    """
    flowchart = {**config.get("flowchart", {}), "htmlLabels": False}
    return {**config, "htmlLabels": False, "flowchart": flowchart}


@contextmanager
def _mermaid_page(vendor: Path):
    """打开一个能 import 本地 mermaid 的空白页（不联网：请求由 page.route 从 vendor 目录回答）。"""
    from playwright.sync_api import sync_playwright

    if not (vendor / "mermaid.esm.min.mjs").is_file():
        raise SystemExit(f"[mermaid_pdf] 找不到 {vendor}/mermaid.esm.min.mjs（vendored mermaid missing）："
                         "请先运行 bash scripts/setup.sh")

    def serve(route):
        rel = route.request.url[len(_ORIGIN):].split("?")[0].lstrip("/")
        path = (vendor / rel).resolve()
        if rel and path.is_file() and vendor.resolve() in path.parents:
            ctype = "text/javascript" if path.suffix in (".mjs", ".js") else mimetypes.guess_type(path.name)[0]
            route.fulfill(body=path.read_bytes(), content_type=ctype or "application/octet-stream")
        elif not rel:
            route.fulfill(body=_PAGE, content_type="text/html; charset=utf-8")
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.route("**/*", lambda route: serve(route) if route.request.url.startswith(_ORIGIN)
                       else route.abort())
            page.goto(_ORIGIN + "/")
            yield page
        finally:
            browser.close()


def render(code: str, vendor: Path, config: dict, out: Path) -> None:
    """画一张图，按后缀写成 PDF（页面大小正好是图的大小）或 SVG。"""
    with _mermaid_page(vendor) as page:
        result = page.evaluate(_RENDER_JS, [code, static_config(config), "diagram"])
        if out.suffix == ".svg":
            out.write_text(result["svg"], encoding="utf-8")
        else:
            page.pdf(path=str(out), width=f"{result['width']}px", height=f"{result['height'] + 1}px",
                     print_background=True, page_ranges="1",
                     margin={"top": "0", "right": "0", "bottom": "0", "left": "0"})


def render_svgs(codes: list[str], vendor: Path, config: dict, prefix: str = "mermaid-offline") -> list[str]:
    """在同一个浏览器里把多张图画成 SVG 字符串（离线包的网页用，见 scripts/make_offline.py）。"""
    if not codes:
        return []
    with _mermaid_page(vendor) as page:
        return [page.evaluate(_RENDER_JS, [code, static_config(config), f"{prefix}-{i}"])["svg"]
                for i, code in enumerate(codes)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="离线把 mermaid 图画成 PDF 或 SVG（与 mmdc -i/-o 相同）")
    parser.add_argument("-i", "--input", type=Path, required=True, help="mermaid 源文件")
    parser.add_argument("-o", "--output", type=Path, required=True, help="输出的 .pdf 或 .svg")
    parser.add_argument("--vendor", type=Path, required=True, help="含 mermaid.esm.min.mjs 的目录")
    parser.add_argument("--config", default="{}", help="mermaid.initialize 的参数（JSON）")
    args = parser.parse_args(argv)
    if args.output.suffix not in (".pdf", ".svg"):
        parser.error(f"输出只能是 .pdf 或 .svg，实际为 {args.output.name}")
    render(args.input.read_text(encoding="utf-8"), args.vendor, json.loads(args.config), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

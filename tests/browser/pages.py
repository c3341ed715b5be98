"""浏览器检查的辅助函数：从 _toc.yml 列出章节页面、在本机回环地址上提供构建好的 HTML。"""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML_DIR = ROOT / "_build" / "html"
SCREENSHOT_DIR = ROOT / "_build" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def toc_files(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """按目录顺序列出 _toc.yml 里（未注释的）全部文件，不带扩展名，如 ``book/preface``。"""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    for key in ("parts", "chapters"):
        walk(toc.get(key))
    return [str(Path(f).with_suffix("")) if f.endswith((".md", ".ipynb")) else f for f in files]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # .mjs 必须以 JavaScript MIME 类型提供，否则浏览器拒绝执行 mermaid 的 ES 模块
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript", ".js": "text/javascript", ".woff": "font/woff",
        ".woff2": "font/woff2", ".svg": "image/svg+xml", ".json": "application/json",
    }

    def log_message(self, *args):  # 测试输出里不要每个请求一行
        pass


class LoopbackServer:
    """在 127.0.0.1 的随机端口上提供一个目录，用作上下文管理器。"""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

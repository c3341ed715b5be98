"""浏览器检查的辅助函数：从 _toc.yml 列出章节页面、在本机回环地址上提供构建好的 HTML。"""
from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from book_toc import toc_files  # noqa: E402,F401  目录顺序与笔记本计时共用
HTML_DIR = ROOT / "_build" / "html"
SCREENSHOT_DIR = ROOT / "_build" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


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

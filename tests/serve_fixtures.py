"""test_index / test_serve / test_export / 浏览器搜索页共用的小工厂：随机权重检查点、几何图形图库、坏文件。"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from PIL import Image

from clipedu.benchmarking import rss_mb  # noqa: F401  测试从这里导入
from clipedu.search.testing import free_port, save_random_checkpoint  # noqa: F401


def write_shapes_gallery(folder: Path, n: int, seed: int = 7, split: str = "test", subfolders: int = 4) -> list[tuple]:
    """把几何图形世界的 n 张图写成 PNG：``sub{k}/{i:04d}_{颜色}{形状}.png``；返回 [(相对路径, 颜色下标, 形状下标)]。"""
    from clipedu.data.shapes import ShapesDataset

    ds = ShapesDataset(split, size=n, seed=seed)
    out = []
    for i in range(n):
        c, s, *_ = ds.objects(i)[0]
        rel = f"sub{i % subfolders}/{i:04d}_c{c}s{s}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.raw(i)).save(folder / rel)
        out.append((rel, c, s))
    return out


def png_bytes(color=(220, 40, 40), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_bad_files(folder: Path) -> dict[str, str]:
    """各种坏文件，返回 {相对路径: 期望的原因}。"""
    folder.mkdir(parents=True, exist_ok=True)
    good = png_bytes()
    (folder / "not_an_image.jpg").write_bytes(b"hello, this is text")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")  # 几 KB 的文件，解开是 8100 万像素
    (folder / "bomb.png").write_bytes(bomb.getvalue())
    return {"not_an_image.jpg": "not_image", "truncated.png": "truncated", "bomb.png": "too_large"}


class ThreadServer:
    """在本进程的后台线程里用 uvicorn 运行 Starlette 应用（只绑 127.0.0.1）。"""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn 没有启动")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

"""test_index / test_serve / test_export / 浏览器搜索页共用的小工厂：随机权重检查点、几何图形图库、坏文件。"""
from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

from PIL import Image


def save_random_checkpoint(path: Path, preset_or_config="tiny-cpu", seed: int = 0) -> Path:
    """随机初始化的 clipedu 检查点（格式与 train 写出的一致，只是没有训练状态）。"""
    import torch

    import clipedu
    from clipedu.checkpoint import FORMAT, VERSION

    torch.manual_seed(seed)
    model = clipedu.create_model(preset_or_config)
    tok = clipedu.ChineseTokenizer(context_length=model.context_length)
    clipedu.save_checkpoint({"format": FORMAT, "version": VERSION, "model": model.state_dict(),
                             "tokenizer": tok.state_dict(), "config": model.config.to_dict()}, path)
    return path


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def rss_mb(pid: int | None = None) -> float:
    """进程的常驻内存（MB），读 /proc。"""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024

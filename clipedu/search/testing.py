"""测试与基准共用的服务小工厂：随机权重检查点、几何图形图库、服务子进程。

``tests/`` 与 ``benchmarks/serve_*.py`` 都从这里导入，不各写一份。
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# 含 clipedu 包的目录：服务子进程从这里导入同一份 clipedu
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def save_random_checkpoint(path: Path, preset_or_config="tiny-cpu",
                           seed: int = 0) -> Path:
    """随机初始化的 clipedu 检查点（格式与 train 写出的一致，只是没有训练状态）。"""
    import torch

    import clipedu
    from clipedu.checkpoint import FORMAT, VERSION

    torch.manual_seed(seed)
    model = clipedu.create_model(preset_or_config)
    tok = clipedu.ChineseTokenizer(context_length=model.context_length)
    clipedu.save_checkpoint({"format": FORMAT, "version": VERSION,
                             "model": model.state_dict(), "tokenizer": tok.state_dict(),
                             "config": model.config.to_dict()}, path)
    return path


def make_gallery(folder: Path, n: int, seed: int = 11) -> None:
    """几何图形世界的 n 张 32 px PNG（每张至多 2 个物体），分在 10 个子文件夹里。"""
    from PIL import Image

    from clipedu.data.shapes import ShapesDataset

    ds = ShapesDataset("test", size=n, seed=seed, max_objects=2)
    for i in range(n):
        path = folder / f"part{i % 10}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.raw(i)).save(path)


def free_port() -> int:
    """本机 127.0.0.1 上一个空闲端口。"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_dir: Path, checkpoint: Path, backend: str,
                 threads: int) -> tuple[subprocess.Popen, str, float]:
    """起一个 ``python -m clipedu serve`` 子进程，等到 /health 可用。

    返回 (进程, 地址, 启动秒数)；子进程先退出时抛出 RuntimeError，带上它的 stderr。
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(_PACKAGE_ROOT),
           "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "clipedu", "serve", "--index", str(index_dir),
           "--checkpoint", str(checkpoint), "--backend", backend,
           "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=5).read()
            return proc, url, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            time.sleep(0.05)

"""以文搜图网页与 JSON 接口（Starlette），见第 6 章 sec-service。

接口（全部返回 JSON；出错时是 ``{"error": "中文说明 / English key", "status": 4xx}``）::

    GET  /health                        {"status": "ok", "count", "dim", "backend", "torch_loaded", "inv_temperature"}
    GET  /search?q=文本&k=12            {"query", "k", "took_ms", "results": [{"rank", "id", "path", "score", "url"}]}
    POST /similar?k=12      请求体=图像   {"k", "took_ms", "results": [...]}（与 /search 相同）
    POST /classify?labels=a,b,c 请求体=图像  {"took_ms", "labels": [{"label", "score", "prob"}]}（按 prob 降序）
    GET  /image/{id}                    索引里第 id 张图的文件（只服务索引里的文件）

上传的图像直接作为请求体发送（``curl --data-binary @a.jpg``），不需要 multipart。
"""
from __future__ import annotations

import logging
import mimetypes
import os
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .images import DEFAULT_MAX_PIXELS, BadImage, decode_image, preprocess
from .index import ImageIndex

log = logging.getLogger("clipedu.serve")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}


@dataclass
class Limits:
    """服务端对输入的限制；超过一律 4xx。"""

    max_k: int = 100                    # k 的上限
    max_query_chars: int = 200          # 查询文本的字符数上限
    max_upload_bytes: int = 8 * 2**20   # 上传图像的字节上限
    max_pixels: int = DEFAULT_MAX_PIXELS  # 上传图像的像素上限
    max_labels: int = 32                # 零样本分类的标签个数上限
    max_label_chars: int = 64           # 每个标签的字符数上限


def _bad(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _parse_k(request: Request, limits: Limits, default: int = 12) -> int:
    raw = request.query_params.get("k")
    if raw is None:
        return default
    try:
        k = int(raw)
    except ValueError:
        raise _bad(400, f"k 应为整数，实际为 {raw[:20]!r} / k must be an integer") from None
    if not 1 <= k <= limits.max_k:
        raise _bad(400, f"k 应在 1–{limits.max_k} 之间，实际为 {k} / k out of range")
    return k


def _parse_query(request: Request, limits: Limits) -> str:
    q = request.query_params.get("q", "").strip()
    if not q:
        raise _bad(400, "查询为空：请输入要搜索的文字，如“红色的圆形” / empty query")
    if len(q) > limits.max_query_chars:
        raise _bad(400, f"查询过长：{len(q)} 个字符，上限 {limits.max_query_chars} / query too long")
    return q


def _parse_labels(request: Request, limits: Limits) -> list[str]:
    raw = request.query_params.get("labels", "")
    labels = []
    for part in raw.replace("，", ",").replace("\n", ",").split(","):
        part = part.strip()
        if part and part not in labels:
            labels.append(part)
    if not labels:
        raise _bad(400, "没有标签：请用逗号或换行分隔至少一个标签 / no labels")
    if len(labels) > limits.max_labels:
        raise _bad(400, f"标签太多：{len(labels)} 个，上限 {limits.max_labels} / too many labels")
    long = [lb for lb in labels if len(lb) > limits.max_label_chars]
    if long:
        raise _bad(400, f"标签过长：{long[0][:20]}…，上限 {limits.max_label_chars} 个字符 / label too long")
    return labels


async def _read_upload(request: Request, limits: Limits) -> bytes:
    """边读边数：超过上限立刻 413，不会把超大请求体整个读进内存。"""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise _bad(413, f"上传的图像太大：{int(declared)} 字节，上限 {limits.max_upload_bytes} / upload too large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limits.max_upload_bytes:
            raise _bad(413, f"上传的图像太大：超过 {limits.max_upload_bytes} 字节 / upload too large")
    if not body:
        raise _bad(400, "没有收到图像：请把图像文件作为请求体上传 / empty upload")
    return bytes(body)


class SearchService:
    """索引 + 编码器 + 一把锁：编码器在一个线程里一次只跑一批（PyTorch 与 ORT 自己用多线程）。"""

    def __init__(self, index: ImageIndex, encoder, limits: Limits):
        if index.dim != encoder.embed_dim:
            raise ValueError(f"索引维度 {index.dim} 与模型嵌入维度 {encoder.embed_dim} 不符 / dimension mismatch")
        if index.meta.get("model_sha256") not in (None, encoder.fingerprint):
            raise ValueError(
                "索引是用另一个检查点建的（model_sha256 不同），用这个模型检索会得到无意义的结果；"
                "请换回建索引时的检查点，或重新建索引 / index was built with a different checkpoint"
            )
        self.index, self.encoder, self.limits = index, encoder, limits
        self.root = Path(os.path.realpath(index.root))
        self._lock = threading.Lock()

    def results(self, vector: np.ndarray, k: int) -> list[dict]:
        scores, ids = self.index.search(vector[None, :], k)
        return [{"rank": r + 1, "id": int(i), "path": self.index.items[i]["path"], "score": round(float(s), 4),
                 "url": f"/image/{int(i)}"} for r, (s, i) in enumerate(zip(scores[0], ids[0]))]

    def text_vector(self, q: str) -> np.ndarray:
        with self._lock:
            return self.encoder.encode_texts([q])[0]

    def image_vector(self, data: bytes) -> np.ndarray:
        try:
            pixels = preprocess(decode_image(data, self.limits.max_pixels), self.encoder.image_size)
        except BadImage as e:
            status = 413 if e.reason == "too_large" else 400 if e.reason == "truncated" else 415
            raise _bad(status, f"无法使用上传的图像（{e.reason}）：{e.detail} / bad image upload") from None
        with self._lock:
            return self.encoder.encode_images(pixels[None])[0]

    def classify(self, vector: np.ndarray, labels: list[str]) -> list[dict]:
        with self._lock:
            text = self.encoder.encode_texts(labels)
        scores = text @ vector                                      # (labels,)
        logits = self.encoder.inv_temperature * scores
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        rows = [{"label": lb, "score": round(float(s), 4), "prob": round(float(p), 4)}
                for lb, s, p in zip(labels, scores, probs)]
        return sorted(rows, key=lambda r: -r["prob"])

    def image_path(self, i: int) -> Path:
        """第 i 张索引图的真实路径；不在索引里、是符号链接、或解析后落在文件夹之外都 404。"""
        if not 0 <= i < len(self.index):
            raise _bad(404, f"没有编号为 {i} 的图像（索引共 {len(self.index)} 张） / image not found")
        path = self.root / self.index.items[i]["path"]
        real = Path(os.path.realpath(path))
        if path.is_symlink() or self.root not in real.parents or not real.is_file():
            raise _bad(404, f"图像 {i} 已不在图片文件夹中（被移动、删除或换成了链接） / image not available")
        return real


def _static_files() -> dict[str, bytes]:
    folder = resources.files("clipedu.search") / "static"
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith(tuple(STATIC_TYPES))}


def create_app(index: ImageIndex, encoder, limits: Limits | None = None) -> Starlette:
    """建 Starlette 应用；所有坏输入在这里变成 4xx JSON，意外错误只回 500 JSON、不带调用栈。"""
    service = SearchService(index, encoder, limits or Limits())
    static = _static_files()

    async def page(request: Request) -> Response:
        return HTMLResponse(static["index.html"])

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            raise _bad(404, f"没有这个静态文件：{name[:40]} / not found")
        return Response(static[name], media_type=STATIC_TYPES[Path(name).suffix])

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "count": len(service.index), "dim": service.index.dim,
                             "backend": encoder.backend, "torch_loaded": "torch" in sys.modules,
                             "inv_temperature": round(encoder.inv_temperature, 4)})

    async def search(request: Request) -> Response:
        q, k = _parse_query(request, service.limits), _parse_k(request, service.limits)
        t0 = time.perf_counter()
        vector = await run_in_threadpool(service.text_vector, q)
        results = service.results(vector, k)
        return JSONResponse({"query": q, "k": k, "took_ms": round(1000 * (time.perf_counter() - t0), 2),
                             "results": results})

    async def similar(request: Request) -> Response:
        k = _parse_k(request, service.limits)
        data = await _read_upload(request, service.limits)
        t0 = time.perf_counter()
        vector = await run_in_threadpool(service.image_vector, data)
        return JSONResponse({"k": k, "took_ms": round(1000 * (time.perf_counter() - t0), 2),
                             "results": service.results(vector, k)})

    async def classify(request: Request) -> Response:
        labels = _parse_labels(request, service.limits)
        data = await _read_upload(request, service.limits)
        t0 = time.perf_counter()
        vector = await run_in_threadpool(service.image_vector, data)
        rows = await run_in_threadpool(service.classify, vector, labels)
        return JSONResponse({"took_ms": round(1000 * (time.perf_counter() - t0), 2), "labels": rows})

    async def image(request: Request) -> Response:
        path = service.image_path(request.path_params["i"])
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = "没有这个地址 / not found" if exc.detail == "Not Found" else exc.detail
        if exc.status_code == 405:
            detail = f"这个地址不接受 {request.method} 请求 / method not allowed"
        return JSONResponse({"error": detail, "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("处理 %s 时出错", request.url.path)  # 调用栈只进服务端日志，不回给客户端
        return JSONResponse({"error": "服务器内部错误 / internal server error", "status": 500}, status_code=500)

    routes = [
        Route("/", page), Route("/static/{name}", static_file), Route("/health", health),
        Route("/search", search), Route("/similar", similar, methods=["POST"]),
        Route("/classify", classify, methods=["POST"]), Route("/image/{i:int}", image),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


def host_warning(host: str) -> str | None:
    """不是回环地址时返回一条警告：局域网里的任何人都能访问，且服务没有登录。"""
    if host in LOOPBACK:
        return None
    return (f"警告：--host {host} 让局域网（甚至公网）上的任何人都能访问这个服务，它没有登录与限流；"
            "只在你信任的网络里这样做 / listening on a non-loopback address")


def bind_socket(host: str, port: int):
    """先自己绑定端口：地址写错、端口被占用、没有权限都在载入模型之前给出一行说明（指明 --host/--port）。"""
    import errno
    import socket

    from ..errors import RunError, UsageError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host!r} 不是可用的主机名或 IP 地址（{e}） / bad host") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise RunError(f"--port {port} 已被别的程序占用；请换一个 --port / address already in use") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(f"--port {port}：没有权限监听（1024 以下的端口需要管理员权限）；请换一个 --port "
                             "/ permission denied") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"--host {host} 不是这台机器的地址 / address not available") from None
        raise
    return sock


def run_server(app: Starlette, host: str = "127.0.0.1", port: int = 8000, sock=None) -> None:
    """在 host:port（或已绑定好的 sock）上运行服务，直到 Ctrl+C。"""
    import uvicorn

    sock = sock or bind_socket(host, port)
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    print(f"以文搜图服务：http://{host}:{port}/  （Ctrl+C 停止）", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])

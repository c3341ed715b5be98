"""``python -m clipedu index|serve|export``：建索引、以文搜图服务、ONNX 导出（见第 6 章 sec-service）。

例::

    python -m clipedu index --checkpoint runs/tiny/last.pt --images ~/Pictures --out ~/pictures.idx
    python -m clipedu serve --index ~/pictures.idx --checkpoint runs/tiny/last.pt
    python -m clipedu export --checkpoint runs/tiny/last.pt --format onnx --out runs/tiny/onnx
    python -m clipedu serve --index ~/pictures.idx --checkpoint runs/tiny/onnx --backend onnx
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import argtypes

MAX_CHUNK = 100_000      # --chunk-size：一块的向量与文件清单都在内存里
MAX_BATCH = 1024         # --batch-size：一批预处理好的图像在内存里（336 px 时约 1.4 GB）


def add_parsers(sub) -> None:
    """在 clipedu 的子命令表里登记 index、serve、export。"""
    p = sub.add_parser("index", help="给图片文件夹建索引（可中断续跑、增量更新）")
    p.add_argument("--checkpoint", required=True, help="clipedu 检查点、OpenAI/open_clip 权重，或 ONNX 导出目录（配 --backend onnx）")
    p.add_argument("--images", required=True, help="图片文件夹（递归查找，不跟随符号链接）")
    p.add_argument("--out", required=True, help="索引目录")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="torch | onnx")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="向量的存储精度：float16 | float32")
    p.add_argument("--chunk-size", type=argtypes.int_in(1, MAX_CHUNK), default=256,
                   help="每块图片数：中断后已完成的块不重算")
    p.add_argument("--batch-size", type=argtypes.int_in(1, MAX_BATCH), default=64, help="编码的批大小")
    p.add_argument("--max-mb", type=argtypes.float_in(0.0, 2048.0, low_open=True), default=50.0,
                   help="单个文件的大小上限（MB，≤ 2048）")
    p.add_argument("--threads", type=argtypes.threads, default=None, help="编码线程数（默认由后端决定）")
    p.add_argument("--throttle", type=argtypes.float_in(0.0, 60.0), default=0.0,
                   help="每块之后暂停的秒数（0–60，给共享机器让出 CPU）")
    p.add_argument("--strict", action="store_true", help="遇到第一张坏图就报错，而不是跳过并计数")
    p.add_argument("--no-progress", action="store_true", help="不显示进度条")
    p.add_argument("--approx", default=None, choices=("flat", "ivf", "hnsw"),
                   help="再建一个 FAISS 近似索引：flat | ivf | hnsw（需要 faiss-cpu）")
    p.add_argument("--approx-param", type=argtypes.int_in(1, 1_000_000), default=None,
                   help="默认查询参数：ivf 的 nprobe、hnsw 的 efSearch")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("serve", help="以文搜图网页与 JSON 接口（默认只在本机 127.0.0.1）")
    p.add_argument("--index", required=True, help="clipedu index 建好的索引目录")
    p.add_argument("--checkpoint", required=True, help="建索引用的检查点；--backend onnx 时是它的 ONNX 导出目录")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                   help="torch | onnx（onnx 查询时不需要 torch）")
    p.add_argument("--images", default=None, help="图片文件夹搬了家时给出新位置（默认用建索引时记下的路径）")
    p.add_argument("--host", default="127.0.0.1", help="监听地址；0.0.0.0 会对局域网开放（会给出警告）")
    p.add_argument("--port", type=argtypes.port, default=8000, help="端口（1–65535）")
    p.add_argument("--threads", type=argtypes.threads, default=None, help="编码线程数")
    p.add_argument("--max-upload-mb", type=argtypes.float_in(0.0, 1024.0, low_open=True), default=8.0,
                   help="上传图像的大小上限（MB，≤ 1024）")
    p.add_argument("--approx", action="store_true", help="用 index --approx 建好的近似索引检索（默认精确检索）")
    p.add_argument("--approx-param", type=argtypes.int_in(1, 1_000_000), default=None,
                   help="覆盖近似索引的查询参数（nprobe / efSearch）")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("export", help="把图像与文本编码器导出为 ONNX（动态批大小）")
    p.add_argument("--checkpoint", required=True, help="clipedu 检查点或 OpenAI/open_clip 权重")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="目前只有 onnx")
    p.add_argument("--out", required=True, help="输出目录")
    p.add_argument("--no-check", action="store_true", help="不核对 onnxruntime 与 PyTorch 的输出")
    p.add_argument("--overwrite", action="store_true", help="--out 里已有另一个模型的导出时覆盖它（默认拒绝）")
    p.set_defaults(func=_cmd_export)


def _cmd_index(args: argparse.Namespace) -> int:
    from ..outdir import OutDirLock, require_dir
    from .encoders import load_encoder
    from .index import build_index

    # 先查便宜的（--images、--out 与它的锁），再载入模型；两个 index 同时写一个目录会互删对方的文件
    require_dir(args.images, "图片文件夹", "--images")
    with OutDirLock(args.out, enabled=True):
        encoder = load_encoder(args.checkpoint, args.backend, args.threads)
        report = build_index(encoder, args.images, args.out, chunk_size=args.chunk_size,
                             batch_size=args.batch_size, dtype=args.dtype, strict=args.strict,
                             max_bytes=int(args.max_mb * 2**20), progress=not args.no_progress,
                             throttle=args.throttle)
    skipped = "，".join(f"{k} {v}" for k, v in sorted(report.skipped.items())) or "无"
    print(f"索引共 {report.count} 张：新算 {report.embedded}，保留 {report.kept}，移除 {report.removed}；"
          f"复用已完成的块 {report.chunks_reused}/{report.chunks_total}；跳过的坏文件：{skipped}；"
          f"用时 {report.seconds:.1f} 秒 → {args.out}")
    if args.approx:
        from .approx import approx_is_current, build_approx

        if approx_is_current(args.out, args.approx, args.approx_param):
            print(f"近似索引 {args.approx} 已是最新，不重建")
        else:
            meta = build_approx(args.out, args.approx, args.approx_param, threads=args.threads)
            print(f"近似索引 {meta['kind']}（查询参数 {meta['param']}）：{meta['count']} 个向量 → {args.out}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .app import Limits, bind_socket, create_app, run_server
    from .encoders import load_encoder
    from .index import load_index

    index = load_index(args.index)  # 先核对索引：损坏就在载入模型之前停下
    if args.images is not None:
        index.root = Path(args.images).resolve()
    if not index.root.is_dir():
        raise FileNotFoundError(f"图片文件夹 {index.root} 不存在；搬了家请用 --images 指出新位置 / image folder not found")
    if args.approx:
        from .approx import load_approx

        index = load_approx(index, args.index, args.approx_param, args.threads)
    with bind_socket(args.host, args.port) as sock:  # 端口被占用等问题在载入模型之前就报
        encoder = load_encoder(args.checkpoint, args.backend, args.threads)
        app = create_app(index, encoder, Limits(max_upload_bytes=int(args.max_upload_mb * 2**20)))
        run_server(app, args.host, args.port, sock)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..outdir import OutDirLock
    from .export import export_onnx

    with OutDirLock(args.out, enabled=True):
        result = export_onnx(args.checkpoint, args.out, check=not args.no_check, overwrite=args.overwrite)
    print(json.dumps(result, ensure_ascii=False))
    return 0

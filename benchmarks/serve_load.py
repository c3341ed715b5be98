"""有界压测：对本机 127.0.0.1 上的 ``python -m clipedu serve`` 发 2000 个请求、16 个并发客户端（见第 6 章 sec-service）。

请求按 6:2:2 混合 /search、/similar、/classify，每 100 个里有 1 个故意的坏请求（空查询、k 越界、
过长查询、非图像上传、不存在的图像编号），它们必须得到各自的 4xx，其余必须全部 200。
服务进程的常驻内存在预热之后与压测结束时各量一次：应当持平。

    python benchmarks/serve_load.py                    # 写 benchmarks/results/serve.md 的 serve_load 一节
    python benchmarks/serve_load.py --requests 400 --no-write
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from clipedu.benchmarking import cpu_name, rss_mb, write_section
from clipedu.search.testing import make_gallery, save_random_checkpoint, start_server

RESULTS = Path(__file__).resolve().parent / "results" / "serve.md"
TITLE = "以文搜图服务的基准结果"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="请求总数")
    ap.add_argument("--concurrency", type=int, default=16, help="并发客户端数")
    ap.add_argument("--images", type=int, default=10_000, help="图库大小")
    ap.add_argument("--threads", type=int, default=2, help="服务端线程数")
    ap.add_argument("--backend", default="torch", help="torch | onnx")
    ap.add_argument("--workdir", default=None, help="图库与索引放在这里（默认临时目录）")
    ap.add_argument("--no-write", action="store_true", help="只打印，不写 results/serve.md")
    args = ap.parse_args(argv)

    from clipedu.search.encoders import load_encoder
    from clipedu.search.export import export_onnx
    from clipedu.search.index import build_index
    from clipedu.search.loadtest import plan_requests, run_load

    work = Path(args.workdir or tempfile.mkdtemp(prefix="serve_load_"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        ckpt = work / "tiny.pt"
        if not ckpt.is_file():
            save_random_checkpoint(ckpt)
        if not (work / "images").is_dir():
            make_gallery(work / "images", args.images)
        build_index(load_encoder(ckpt), work / "images", work / "idx", progress=False, log=lambda *a: None)
        model = ckpt
        if args.backend == "onnx":
            export_onnx(ckpt, work / "onnx", check=False)
            model = work / "onnx"
        uploads = [p.read_bytes() for p in sorted((work / "images").rglob("*.png"))[:32]]
        proc, url, _ = start_server(work / "idx", model, args.backend, args.threads)
        try:
            run_load(url, plan_requests(200, uploads, bad_every=0), args.concurrency)  # 预热
            rss0 = rss_mb(proc.pid)
            result = run_load(url, plan_requests(args.requests, uploads, bad_every=100), args.concurrency)
            rss1 = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    s = result.summary()
    load_after = os.getloadavg()
    lines = [
        f"### 有界压测（`python benchmarks/serve_load.py --requests {args.requests} --concurrency {args.concurrency} "
        f"--images {args.images} --backend {args.backend}`）",
        "",
        f"CPU：{cpu_name()}，服务端 {args.threads} 线程、后端 {args.backend}，客户端与服务在同一台机器上；"
        f"{time.strftime('%Y-%m-%d', time.gmtime())}；1 分钟平均负载 {load_before[0]:.1f} → {load_after[0]:.1f}"
        f"，压测与服务进程 nice {os.nice(0)}。",
        "",
        f"{args.requests} 个请求用时 {s['seconds']:.1f} 秒（{args.requests / s['seconds']:.0f} 个/秒）；"
        f"故意的坏请求 {s['bad_as_expected']} 个，全部得到预期的 4xx；意外的状态码 **{s['unexpected']}** 个。"
        f"服务进程常驻内存：预热后 {rss0:.0f} MB，压测后 {rss1:.0f} MB（变化 {rss1 - rss0:+.0f} MB）。",
        "",
        "| 端点 | 成功请求数 | p50（ms） | p99（ms） |",
        "|---|---:|---:|---:|",
    ]
    for name in ("/search", "/similar", "/classify"):
        if name in s:
            lines.append(f"| {name} | {s[name]['n']} | {s[name]['p50_ms']:.1f} | {s[name]['p99_ms']:.1f} |")
    text = "\n".join(lines)
    print(text)
    if result.unexpected:
        print("意外的响应：", result.unexpected[:10], file=sys.stderr)
    if not args.no_write:
        write_section(RESULTS, f"serve_load_{args.backend}", text, TITLE)
    raise SystemExit(1 if result.unexpected else 0)


if __name__ == "__main__":
    main()

"""以文搜图服务的延迟、启动时间、索引大小与安装体积：PyTorch 后端对 ONNX 后端（见第 6 章 sec-service）。

在几何图形世界上写出 N 张 PNG（默认 1 万张），用 tiny-cpu 检查点建索引，然后：

1. 进程内：一条文本查询 = 分词 + 文本塔 + 与 N 个向量的矩阵乘法 + top-k，逐条计时；
2. 经 HTTP：用 ``python -m clipedu serve`` 起服务（两种后端各一个子进程），顺序发 /search，计时；
3. 启动时间：从启动子进程到 /health 返回 200；常驻内存；
4. 精确检索的扫描成本随 N 增长（随机单位向量，float16 存储）：什么时候才值得用近似索引。

检查点不影响延迟（结构相同），默认用随机初始化的 tiny-cpu；也可以 --checkpoint 指定。

    python benchmarks/serve_latency.py                 # 写 benchmarks/results/serve.md 的 serve_latency 一节
    python benchmarks/serve_latency.py --images 2000 --queries 100 --no-write
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from clipedu.benchmarking import cpu_name, rss_mb, write_section
from clipedu.search.testing import make_gallery, save_random_checkpoint, start_server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.md"
SERVE_TITLE = "以文搜图服务的基准结果"
QUERIES = ["红色的圆形", "一个蓝色的小正方形", "左上方有一个绿色的三角形", "黄色的星形", "紫色的菱形", "白色的十字形"]


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def in_process(encoder, index, n_queries: int) -> dict:
    """一条文本查询的端到端时间（分词、编码、检索）、其中检索部分的时间，以及进程 CPU 时间。

    CPU 时间（所有线程相加）几乎不受机器上其他负载的影响：负载高时墙钟时间里多出来的是排队。"""
    for q in QUERIES:
        index.search(encoder.encode_texts([q]), 12)
    total, scan, cpu = [], [], []
    for i in range(n_queries):
        t0, c0 = time.perf_counter(), time.process_time()
        vec = encoder.encode_texts([QUERIES[i % len(QUERIES)]])
        t1 = time.perf_counter()
        index.search(vec, 12)
        t2, c2 = time.perf_counter(), time.process_time()
        total.append(1000 * (t2 - t0))
        scan.append(1000 * (t2 - t1))
        cpu.append(1000 * (c2 - c0))
    return {"p50": percentiles(total)[0], "p99": percentiles(total)[1], "scan_p50": percentiles(scan)[0],
            "cpu_p50": percentiles(cpu)[0]}


ABLATIONS = {
    "现在": {},
    "检索时 BLAS 用默认线程数": {"blas": True},
    "每条查询都把 float16 转成 float32": {"convert": True},
    "两者都有（第一版）": {"blas": True, "convert": True},
}


@contextlib.contextmanager
def first_version(blas: bool = False, convert: bool = False):
    """只为对照：临时换回第一版的两个做法，看它们各自让一条查询慢了多少。"""
    import clipedu.search.index as index_mod

    saved = index_mod.one_blas_thread, index_mod.ImageIndex.matrix
    if blas:
        index_mod.one_blas_thread = contextlib.nullcontext
    if convert:
        index_mod.ImageIndex.matrix = lambda self: np.asarray(self.embeddings, dtype=np.float32)
    try:
        yield
    finally:
        index_mod.one_blas_thread, index_mod.ImageIndex.matrix = saved


def ablation(encoders: dict, index, n_queries: int) -> list[str]:
    """两种后端 × 四种做法的进程内 p50 与检索 p50。"""
    rows = []
    for name, switches in ABLATIONS.items():
        cells = []
        for backend, encoder in encoders.items():
            with first_version(**switches):
                r = in_process(encoder, index, n_queries)
            cells.append(f"{r['p50']:.2f} / {r['scan_p50']:.2f} / {r['cpu_p50']:.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def over_http(url: str, n_queries: int) -> dict:
    def one(q):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{url}/search?{urllib.parse.urlencode({'q': q, 'k': 12})}", timeout=30) as r:
            json.loads(r.read())
        return 1000 * (time.perf_counter() - t0)

    for q in QUERIES:
        one(q)
    ms = [one(QUERIES[i % len(QUERIES)]) for i in range(n_queries)]
    p50, p99 = percentiles(ms)
    return {"p50": p50, "p99": p99}


def blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"], default=1)


def median_ms(fn, repeats: int) -> float:
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ms.append(1000 * (time.perf_counter() - t0))
    return float(np.median(ms))


def scan_cost(sizes: list[int], dim: int, repeats: int = 20) -> list[dict]:
    """精确检索（float16 存储、内存里一份 float32 副本、分块相乘 + argpartition）随 N 的耗时与内存，
    以及如果每条查询都把 float16 转成 float32（第一版就这样做）要多花的时间。"""
    from clipedu.search.index import ImageIndex

    rng = np.random.default_rng(0)
    out = []
    for n in sizes:
        emb = rng.standard_normal((n, dim), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        index = ImageIndex(Path("."), emb.astype(np.float16), [{}] * n)
        q = emb[:1]
        index.search(q, 12)                                     # 第一次检索时建 float32 副本
        out.append({"n": n, "search": median_ms(lambda: index.search(q, 12), repeats),
                    "convert": median_ms(lambda: index.embeddings.astype(np.float32), repeats),
                    "mb": n * dim * (2 + 4) / 2**20})
        del emb, index
    return out


def dir_mb(*names: str) -> dict:
    import importlib.util

    out = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            out[name] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000, help="图库大小")
    ap.add_argument("--queries", type=int, default=300, help="每种测法的查询条数")
    ap.add_argument("--threads", type=int, default=2, help="服务端线程数")
    ap.add_argument("--checkpoint", default=None, help="clipedu 检查点（默认随机初始化的 tiny-cpu）")
    ap.add_argument("--workdir", default=None, help="图库与索引放在这里（默认临时目录，结束时删除）")
    ap.add_argument("--scan-sizes", default="10000,100000,1000000", help="扫描成本的 N 列表")
    ap.add_argument("--no-write", action="store_true", help="只打印，不写 results/serve.md")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from clipedu.search.encoders import load_encoder
    from clipedu.search.export import export_onnx
    from clipedu.search.index import build_index, load_index

    work = Path(args.workdir or tempfile.mkdtemp(prefix="serve_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        if args.checkpoint:
            ckpt = Path(args.checkpoint)
        else:
            ckpt = save_random_checkpoint(work / "tiny.pt")
        images = work / "images"
        if not images.is_dir():
            make_gallery(images, args.images)
        encoder = load_encoder(ckpt, threads=args.threads)
        report = build_index(encoder, images, work / "idx", progress=False, log=lambda *a: None)
        index = load_index(work / "idx")
        index_mb = sum(p.stat().st_size for p in (work / "idx").iterdir()) / 2**20
        export = export_onnx(ckpt, work / "onnx", log=lambda *a: None)
        onnx_encoder = load_encoder(work / "onnx", "onnx", threads=args.threads)
        rows = {"torch": in_process(encoder, index, args.queries), "onnx": in_process(onnx_encoder, index, args.queries)}
        ablations = ablation({"torch": encoder, "onnx": onnx_encoder}, index, args.queries)
        http = {}
        for backend, ck in (("torch", ckpt), ("onnx", work / "onnx")):
            proc, url, startup = start_server(work / "idx", ck, backend, args.threads)
            try:
                http[backend] = {**over_http(url, args.queries), "startup_s": startup, "rss_mb": rss_mb(proc.pid)}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        scans = scan_cost([int(s) for s in args.scan_sizes.split(",")], index.dim)
        sizes = dir_mb("torch", "torchvision", "onnxruntime", "numpy", "PIL", "starlette", "uvicorn")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    lines = [
        f"### 文本查询延迟（`python benchmarks/serve_latency.py --images {args.images} --queries {args.queries} "
        f"--threads {args.threads}`）",
        "",
        f"CPU：{cpu_name()}，服务端 {args.threads} 线程；tiny-cpu（随机初始化，结构决定延迟）；"
        f"{time.strftime('%Y-%m-%d', time.gmtime())}。机器与其他任务共享：开始时 1 分钟平均负载 "
        f"{load_before[0]:.1f}，结束时 {load_after[0]:.1f}（2 核机器上大于 2 即有排队）。",
        "",
        (f"索引：{report.count} 张图，建索引 {report.seconds:.1f} 秒（{report.embedded / max(report.seconds, 1e-9):.0f} 张/秒），"
         if report.embedded else
         f"索引：{report.count} 张图（--workdir 里已建好；本次重扫文件夹、确认无变化用时 {report.seconds:.1f} 秒），")
        + f"向量 {index.dim} 维 {index.embeddings.dtype}，索引目录 {index_mb:.2f} MB"
        f"（向量 {index.embeddings.nbytes / 2**20:.2f} MB）。ONNX 模型：图像 {export['image_mb']} MB、文本 {export['text_mb']} MB。",
        "",
        "| 后端 | 进程内 p50 / p99（ms） | 其中检索 p50（ms） | 进程 CPU 时间 p50（ms） "
        "| HTTP /search p50 / p99（ms） | 启动到可用（s） | 服务进程常驻内存（MB） |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in ("torch", "onnx"):
        r, h = rows[b], http[b]
        lines.append(f"| {b} | {r['p50']:.2f} / {r['p99']:.2f} | {r['scan_p50']:.3f} | {r['cpu_p50']:.2f} "
                     f"| {h['p50']:.2f} / {h['p99']:.2f} "
                     f"| {h['startup_s']:.1f} | {h['rss_mb']:.0f} |")
    lines += ["", "第一版的两个做法各自的代价（进程内，同一个索引；每格是 端到端 p50 / 其中检索 p50 / 进程 CPU 时间 p50，ms）：",
              "", "| 做法 | torch | onnx |", "|---|---|---|"] + ablations
    lines += ["", "安装体积（site-packages 里的目录，MB）：" + "，".join(f"{k} {v:.0f}" for k, v in sizes.items()) + "。",
              "", f"精确检索的扫描成本（一条查询、{index.dim} 维、float16 存储、top-12，中位数；"
              f"numpy 的 BLAS 默认 {blas_threads()} 个线程）：", "",
              "| 图库大小 N | 每条查询（ms） | 若每条查询都把 float16 转成 float32，另加（ms） "
              "| 向量占内存（MB，float16 + float32 副本） |",
              "|---:|---:|---:|---:|"]
    lines += [f"| {r['n']:,} | {r['search']:.2f} | {r['convert']:.2f} | {r['mb']:.0f} |" for r in scans]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(RESULTS, "serve_latency", text, SERVE_TITLE)


if __name__ == "__main__":
    main()

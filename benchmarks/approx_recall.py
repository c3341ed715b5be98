"""近似索引（FAISS flat / IVF / HNSW）对精确检索：recall@10、单条查询延迟、建索引时间与内存（见第 6 章 sec-service）。

两种图库：

1. 合成：N 个随机单位向量（128 维，与 tiny-cpu 相同），查询也是随机单位向量。高维空间里均匀分布的
   点没有簇结构，是近似索引最难的情形（最近邻与第 100 近邻的距离相差无几）；
2. 真实：``serve_latency.py --workdir DIR`` 留下的 tiny-cpu 几何图形索引（``DIR/idx`` 与 ``DIR/tiny.pt``），
   查询是 36 种“颜色的形状”文本加上随机挑的图库图像（以图搜图）。

recall@10 = 近似 top-10 与精确 top-10 的交集大小 / 10，对所有查询取平均。延迟是一条一条地查
（服务就是这样用的），取中位数；同时记进程 CPU 时间，它受机器上其他负载的影响小得多。

    python benchmarks/approx_recall.py --sizes 100000,1000000 --real /tmp/sbench
    python benchmarks/approx_recall.py --sizes 20000 --no-write          # 快速试跑
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from clipedu.benchmarking import cpu_name, write_section
from clipedu.search.approx import ApproxIndex, build_faiss
from clipedu.search.index import ImageIndex

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.md"
PARAMS = {"flat": [0], "ivf": [1, 4, 16, 64, 256], "hnsw": [16, 64, 256, 1024]}


def unit(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(search, queries: np.ndarray, k: int, n_timed: int) -> tuple[np.ndarray, float, float]:
    """全部查询一起跑一遍取结果；再逐条计时前 n_timed 条：返回 (下标, 墙钟 p50 ms, CPU p50 ms)。"""
    ids = search(queries, k)[1]
    wall, cpu = [], []
    for q in queries[:n_timed]:
        t0, c0 = time.perf_counter(), time.process_time()
        search(q[None], k)
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
    return ids, float(np.median(wall)), float(np.median(cpu))


def recall_at(got: np.ndarray, want: np.ndarray, k: int = 10) -> float:
    hits = [len(set(g[:k].tolist()) & set(w[:k].tolist())) for g, w in zip(got, want)]
    return float(np.mean(hits)) / k


def bench(gallery: np.ndarray, queries: np.ndarray, kinds: list[str], n_timed: int, label: str,
          hnsw_max: int) -> list[str]:
    """一种图库上的全部行（表格的 Markdown 行）。"""
    import faiss

    exact = ImageIndex(Path("."), gallery.astype(np.float16), [{}] * len(gallery))
    exact.matrix()                                                 # float32 副本在计时前建好
    want, wall, cpu = timed(exact.search, queries, 10, n_timed)
    rows = [f"| {label} | 精确（numpy） | – | 1.000 | {wall:.2f} | {cpu:.2f} | – | "
            f"{exact.matrix().nbytes / 2**20:.0f} |"]
    print(rows[-1], flush=True)
    for kind in kinds:
        if kind == "hnsw" and len(gallery) > hnsw_max:
            continue
        t0 = time.perf_counter()
        index = build_faiss(exact.matrix(), kind, None, seed=0)
        build_s = time.perf_counter() - t0
        mb = faiss.serialize_index(index).nbytes / 2**20
        approx = ApproxIndex(exact, index, kind, PARAMS[kind][0])
        for param in PARAMS[kind]:
            approx.set_param(param)
            got, wall, cpu = timed(approx.search, queries, 10, n_timed)
            name = {"flat": "flat", "ivf": f"IVF{index.nlist if kind == 'ivf' else ''}", "hnsw": "HNSW32"}[kind]
            knob = {"flat": "–", "ivf": f"nprobe = {param}", "hnsw": f"efSearch = {param}"}[kind]
            rows.append(f"| {label} | {name} | {knob} | {recall_at(got, want):.3f} | {wall:.2f} | {cpu:.2f} "
                        f"| {build_s:.1f} | {mb:.0f} |")
            print(rows[-1], flush=True)
        del index, approx
    return rows


def real_queries(workdir: Path, n_images: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """serve_latency.py 的工作目录 → (图库向量, 查询向量：36 条颜色×形状文本 + n_images 张图库图像)。"""
    from clipedu.data.shapes import COLORS, SHAPES
    from clipedu.search.encoders import load_encoder
    from clipedu.search.index import load_index

    index = load_index(workdir / "idx")
    gallery = index.matrix()
    encoder = load_encoder(workdir / "tiny.pt")
    texts = encoder.encode_texts([f"{c}的{s}" for c in COLORS for s in SHAPES])
    picks = gallery[rng.choice(len(gallery), n_images, replace=False)]
    return gallery, np.concatenate([texts, picks]).astype(np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="合成图库的大小 N 列表")
    ap.add_argument("--dim", type=int, default=128, help="向量维数")
    ap.add_argument("--queries", type=int, default=500, help="算 recall 的查询条数")
    ap.add_argument("--timed", type=int, default=200, help="其中逐条计时的条数")
    ap.add_argument("--threads", type=int, default=2, help="numpy 与 FAISS 的线程数")
    ap.add_argument("--kinds", default="flat,ivf,hnsw", help="要比较的近似索引")
    ap.add_argument("--hnsw-max", type=int, default=200_000,
                    help="只在 N 不超过它的图库上建 HNSW（建图时间随 N 超线性增长）")
    ap.add_argument("--real", default=None, help="serve_latency.py --workdir 的目录（含 idx/ 与 tiny.pt）")
    ap.add_argument("--no-write", action="store_true", help="只打印，不写 results/serve.md")
    args = ap.parse_args(argv)

    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    kinds = args.kinds.split(",")
    rng = np.random.default_rng(0)
    load_before, rows = os.getloadavg(), []
    if args.real:
        gallery, queries = real_queries(Path(args.real), args.queries - 36, rng)
        rows += bench(gallery, queries, kinds, args.timed, f"tiny-cpu（随机初始化）图形 {len(gallery):,}",
                      args.hnsw_max)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        rows += bench(unit(rng, n, args.dim), unit(rng, args.queries, args.dim), kinds, args.timed,
                      f"随机 {n:,}", args.hnsw_max)
    load_after = os.getloadavg()

    cmd = f"python benchmarks/approx_recall.py --sizes {args.sizes} --threads {args.threads}"
    cmd += f" --real {args.real}" if args.real else ""
    lines = [
        f"### 近似索引对精确检索（`{cmd}`）", "",
        f"CPU：{cpu_name()}，{args.threads} 线程；FAISS {faiss.__version__}；{time.strftime('%Y-%m-%d', time.gmtime())}。"
        f"机器与其他任务共享：1 分钟平均负载 {load_before[0]:.1f} → {load_after[0]:.1f}，本进程 nice {os.nice(0)}。"
        f"{args.dim} 维，{args.queries} 条查询算 recall@10，其中 {args.timed} 条逐条计时（中位数）。"
        "“CPU”是进程 CPU 时间（两个线程相加），受其他负载影响小；“内存”是索引本身（精确检索是 float32 矩阵，"
        f"FAISS 是序列化后的大小）。HNSW 只在 N ≤ {args.hnsw_max:,} 的图库上建（--hnsw-max）："
        "建图的时间见“建索引”一列，在这台 2 核机器上建更大的图太久。", "",
        "| 图库 | 索引 | 查询参数 | recall@10 | 每条查询 p50（ms） | CPU p50（ms） | 建索引（s） | 内存（MB） |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ] + rows
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(RESULTS, "approx_recall", text, "以文搜图服务的基准结果")


if __name__ == "__main__":
    main()

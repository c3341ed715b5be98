"""可选的近似最近邻索引（FAISS：flat / IVF / HNSW），接口与精确检索相同（见第 6 章 sec-service）。

``ImageIndex.search(queries, k)`` 是分块的矩阵乘法：结果精确，代价随图库大小 N 线性增长。
图库到了百万量级，可以在同一个索引目录里再建一个 FAISS 索引 {cite}`johnson2019faiss`，
``ApproxIndex`` 包住原来的 ``ImageIndex``，``search`` 的输入输出完全一样，服务代码不用改::

    approx.faiss    faiss.serialize_index 的字节
    approx.json     种类、参数、approx.faiss 的 SHA-256，以及它是从哪一代向量建的（embeddings 的 SHA-256）

三种结构：

- ``flat``：FAISS 的精确内积扫描（与 ``ImageIndex.search`` 结果相同，用作对照）；
- ``ivf``：先用 k-means 把向量分成 nlist 个桶，查询只扫最近的 ``param`` 个桶（nprobe）；
- ``hnsw``：多层近邻图，查询沿图贪心搜索，``param`` 是候选队列长度（efSearch）。

``param`` 越大越准、越慢；recall@10 与延迟的取舍见 ``benchmarks/approx_recall.py``。
读取时先核对 SHA-256 与所属的向量代号，再交给 FAISS 反序列化：被改坏的文件、
与当前索引不配套的文件都会被拒绝。FAISS 的反序列化是 C++ 代码，只读你自己建的文件。
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .index import META, ImageIndex, atomic_write, write_json

APPROX_FAISS = "approx.faiss"
APPROX_META = "approx.json"
KINDS = ("flat", "ivf", "hnsw")
DEFAULT_PARAM = {"flat": 0, "ivf": 16, "hnsw": 64}   # nprobe / efSearch 的默认值
HNSW_M = 32                                          # HNSW 每个节点的邻居数


class ApproxIndexError(ValueError):
    """近似索引文件缺失、被改坏，或与当前的精确索引不配套。"""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("近似索引需要 faiss-cpu：pip install faiss-cpu / faiss not installed") from None
    return faiss


def build_faiss(vectors: np.ndarray, kind: str, nlist: int | None, seed: int):
    """建 FAISS 索引（内积度量：向量已 L2 归一化，内积就是余弦相似度）。"""
    faiss = _faiss()
    N, D = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(D)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(D, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif kind == "ivf":
        nlist = nlist or max(1, min(round(np.sqrt(N)), N // 39))  # 约 √N 个桶，每桶至少 39 个训练点
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        sample = np.random.default_rng(seed).permutation(N)[: 64 * nlist]  # k-means 只用一部分点训练
        index.train(vectors[np.sort(sample)])
    else:
        raise ValueError(f"近似索引的种类应为 {' | '.join(KINDS)}，实际为 {kind!r} / unknown approx kind")
    index.add(vectors)
    return index


def _set_param(index, kind: str, param: int) -> None:
    if kind == "ivf":
        index.nprobe = int(param)
    elif kind == "hnsw":
        index.hnsw.efSearch = int(param)


class ApproxIndex:
    """``ImageIndex`` 加一个 FAISS 索引；``search`` 的签名与返回值与 ``ImageIndex.search`` 相同。"""

    def __init__(self, base: ImageIndex, faiss_index, kind: str, param: int):
        self.base, self.faiss_index, self.kind = base, faiss_index, kind
        self.set_param(param)

    def set_param(self, param: int) -> None:
        """IVF 的 nprobe 或 HNSW 的 efSearch：越大越准、越慢。"""
        if self.kind != "flat" and int(param) < 1:
            raise ValueError(f"{self.kind} 的查询参数应为正整数，实际为 {param} / bad approx param")
        self.param = int(param)
        _set_param(self.faiss_index, self.kind, self.param)

    # 与 ImageIndex 相同的只读接口：服务只用到这些
    root = property(lambda self: self.base.root, lambda self, v: setattr(self.base, "root", v))
    items = property(lambda self: self.base.items)
    meta = property(lambda self: self.base.meta)
    dim = property(lambda self: self.base.dim)

    def __len__(self) -> int:
        return len(self.base)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D]（已归一化）→ (分数 [Q, k'], 下标 [Q, k'])，按分数降序，k' = min(k, N)。

        IVF 的 nprobe 太小时可能凑不满 k 个（FAISS 用 -1 填空位）：只返回找到的列。"""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(int(k), len(self))
        scores, ids = self.faiss_index.search(queries, k)
        found = (ids >= 0).all(axis=0)
        return scores[:, found], ids[:, found].astype(np.int64)


def build_approx(index_dir: str | os.PathLike, kind: str = "hnsw", param: int | None = None,
                 nlist: int | None = None, threads: int | None = None, seed: int = 0) -> dict:
    """在已建好的索引目录里建（或重建）近似索引，原子地写出；返回写进 approx.json 的元数据。"""
    from .index import load_index

    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(int(threads))
    index_dir = Path(index_dir)
    base = load_index(index_dir)
    if len(base) == 0:
        raise ValueError(f"索引 {index_dir} 是空的，没法建近似索引 / empty index")
    index = build_faiss(base.matrix(), kind, nlist, seed)
    param = DEFAULT_PARAM[kind] if param is None else int(param)
    _set_param(index, kind, param)
    data = faiss.serialize_index(index)                            # numpy uint8
    atomic_write(index_dir / APPROX_FAISS, lambda f: f.write(data.tobytes()))
    meta = {"format": "clipedu-approx-index", "version": 1, "kind": kind, "param": param,
            "nlist": int(getattr(index, "nlist", 0)), "count": len(base), "dim": base.dim,
            "faiss_version": faiss.__version__, "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
            "embeddings_sha256": base.meta["embeddings"]["sha256"]}
    write_json(index_dir / APPROX_META, meta)                     # 最后写：它指向上面那个文件
    return meta


def approx_is_current(index_dir: str | os.PathLike, kind: str, param: int | None = None) -> bool:
    """目录里已有同种类、同参数、由当前这代向量建的近似索引时为真（再跑 index --approx 可以跳过）。"""
    index_dir = Path(index_dir)
    try:
        meta = json.loads((index_dir / APPROX_META).read_text(encoding="utf-8"))
        current = json.loads((index_dir / META).read_text(encoding="utf-8"))["embeddings"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    wanted = DEFAULT_PARAM.get(kind) if param is None else int(param)
    return (meta.get("kind"), meta.get("param"), meta.get("embeddings_sha256")) == (kind, wanted, current) \
        and (index_dir / APPROX_FAISS).is_file()


def _refuse(index_dir: Path, what: str) -> ApproxIndexError:
    return ApproxIndexError(
        f"近似索引 {index_dir / APPROX_FAISS} 不可用：{what}。请重建：python -m clipedu index "
        f"--checkpoint CKPT --images DIR --out {index_dir} --approx hnsw / bad approximate index"
    )


def load_approx(base: ImageIndex, index_dir: str | os.PathLike, param: int | None = None,
                threads: int | None = None) -> ApproxIndex:
    """读近似索引并核对它与 ``base``（已用 load_index 读好的精确索引）配套。"""
    index_dir = Path(index_dir)
    meta_path, data_path = index_dir / APPROX_META, index_dir / APPROX_FAISS
    if not meta_path.is_file() or not data_path.is_file():
        raise _refuse(index_dir, f"缺少 {APPROX_META} 或 {APPROX_FAISS}（还没建过近似索引）")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kind, sha, emb_sha = meta["kind"], meta["sha256"], meta["embeddings_sha256"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise _refuse(index_dir, f"{APPROX_META} 读不懂（{type(e).__name__}）") from None
    if kind not in KINDS:
        raise _refuse(index_dir, f"未知的种类 {kind!r}")
    if emb_sha != base.meta.get("embeddings", {}).get("sha256"):
        raise _refuse(index_dir, f"它是从另一代向量建的，与 {META} 指向的向量不配套（索引更新过）")
    data = data_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise _refuse(index_dir, f"{APPROX_FAISS} 的 SHA-256 与 {APPROX_META} 记录的不符（文件被改动或截断）")
    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(int(threads))
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise _refuse(index_dir, f"FAISS 读不出（{str(e).splitlines()[0][:80]}）") from None
    if index.ntotal != len(base) or index.d != base.dim:
        raise _refuse(index_dir, f"它有 {index.ntotal} 个 {index.d} 维向量，索引是 {len(base)} 个 {base.dim} 维")
    return ApproxIndex(base, index, kind, meta.get("param", DEFAULT_PARAM[kind]) if param is None else param)

"""图片索引：分块建立、断点续跑、增量更新、原子替换，以及精确检索（见第 6 章 sec-service）。

索引目录里只有三种文件::

    index.json                元数据：格式、模型指纹、条目数、维度、dtype，以及下面两个文件的名字与 SHA-256
    embeddings-<代>.npy       [N, D] 的 L2 归一化图像向量（float16 或 float32）
    items-<代>.jsonl          每行一张图：{"path": 相对路径, "size": 字节数, "mtime_ns": 修改时间}

（``index --approx`` 另在同一目录里写 ``approx.faiss`` 与 ``approx.json``，见 ``approx.py``。）

每次建成都用一个新的“代”号写出两个数据文件，最后原子地替换 ``index.json`` 指向它们，
再删掉旧代。所以任何时刻被中断，``index.json`` 要么指向完整的旧索引、要么指向完整的新索引。
读取时核对 SHA-256 与形状，被改坏的文件一律拒绝加载。

建索引时每块图片的结果先写进 ``.partial/chunk-<键>.npy/.json``（键是这块文件清单与模型指纹的哈希），
中断后再运行，清单没变的块直接复用，不重算。
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import CorruptFileError
from ..fileinfo import file_sha256
from .images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, BadImage, load_image_file

FORMAT = "clipedu-image-index"
VERSION = 1
META = "index.json"
PARTIAL = ".partial"
DTYPES = ("float16", "float32")


class CorruptIndexError(CorruptFileError):
    """索引文件缺失、被截断或被改动：拒绝加载。"""


class BadImageError(ValueError):
    """--strict 时遇到的第一张坏图。"""


# ---------------------------------------------------------------- 小工具
def atomic_write(path: Path, write: Callable) -> None:
    """写临时文件、fsync、rename：目标文件要么是旧内容，要么是完整的新内容。"""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")))


def _write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


# ---------------------------------------------------------------- 扫描
def scan_images(root: Path, exclude: Optional[Path] = None) -> tuple[list[dict], Counter]:
    """递归列出 root 下的图像文件（按相对路径排序），不跟随符号链接。

    返回 (条目列表, 被忽略的计数)。符号链接一律不收：它可能指向文件夹之外。
    """
    entries, ignored = [], Counter()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not (exclude is not None and (here / d).resolve() == exclude) and d != PARTIAL)
        for name in sorted(filenames):
            full = here / name
            try:
                st = os.lstat(full)
            except OSError:
                ignored["unreadable"] += 1
                continue
            if stat.S_ISLNK(st.st_mode):
                ignored["symlink"] += 1
            elif not stat.S_ISREG(st.st_mode) or full.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored["not_image_extension"] += 1
            else:
                entries.append({"path": full.relative_to(root).as_posix(), "size": st.st_size,
                                "mtime_ns": st.st_mtime_ns})
    entries.sort(key=lambda e: e["path"])
    return entries, ignored


# ---------------------------------------------------------------- 读取与检索
_BLAS = None  # threadpoolctl 的控制器：第一次检索时建（它要扫一遍已载入的动态库）


def one_blas_thread():
    """让 numpy 的 BLAS 在这段代码里只用 1 个线程（没装 threadpoolctl 时什么也不做）。

    一条查询乘 N 个向量是受内存带宽限制的矩阵-向量乘，多线程几乎不快；而 OpenBLAS 的工作线程
    算完后会空转等活，在被别的进程占满的 2 核机器上，N = 1 万时一条查询从 0.24 ms 变成 22 ms
    （见 benchmarks/results/serve.md）。"""
    global _BLAS
    try:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        return _BLAS.limit(limits=1, user_api="blas")
    except ImportError:
        return contextlib.nullcontext()


@dataclass
class ImageIndex:
    """载入内存的索引。``search`` 是分块的矩阵乘法加 argpartition：精确的 top-k。"""

    root: Path                 # 图片文件夹（绝对路径）
    embeddings: np.ndarray     # [N, D]，float16 或 float32，已 L2 归一化
    items: list[dict]          # N 条 {"path", "size", "mtime_ns"}
    meta: dict = field(default_factory=dict)
    block_rows: int = 65536    # 每次与查询相乘的行数：限制 (Q, rows) 分数矩阵的大小
    _f32: Optional[np.ndarray] = field(default=None, init=False, repr=False)  # 检索用的 float32 副本

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def matrix(self) -> np.ndarray:
        """检索用的 float32 矩阵 [N, D]。

        float16 存储时第一次检索转换一次并留在内存里（内存翻倍）：numpy 没有 float16
        矩阵乘法，而每条查询都重新转换一遍，转换比乘法本身慢约 8 倍（见
        benchmarks/results/serve.md）。"""
        if self._f32 is None:
            self._f32 = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        return self._f32

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D]（已归一化）→ (分数 [Q, k'], 下标 [Q, k'])，按分数降序，k' = min(k, N)。"""
        queries = np.asarray(queries, dtype=np.float32)
        Q, N = queries.shape[0], len(self)
        k = min(int(k), N)
        best_s = np.full((Q, 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((Q, 0), dtype=np.int64)
        matrix = self.matrix()
        for start in range(0, N, self.block_rows):
            block = matrix[start:start + self.block_rows]
            with one_blas_thread():
                scores = queries @ block.T                               # (Q, rows)
            s = np.concatenate([best_s, scores], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(block)), scores.shape)], axis=1)
            if s.shape[1] > k:
                part = np.argpartition(-s, k - 1, axis=1)[:, :k]
                s, i = np.take_along_axis(s, part, 1), np.take_along_axis(i, part, 1)
            best_s, best_i = s, i
        order = np.argsort(-best_s, axis=1, kind="stable")
        return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def _corrupt(index_dir: Path, what: str) -> CorruptIndexError:
    return CorruptIndexError(
        f"索引 {index_dir} 已损坏或不完整：{what}；不会修改它。请重新运行 "
        f"python -m clipedu index --checkpoint CKPT --images DIR --out {index_dir} / corrupt index"
    )


def load_index(index_dir: str | os.PathLike, verify: bool = True) -> ImageIndex:
    """读索引并核对：元数据格式、两个数据文件的 SHA-256、形状、dtype、有限值。只读，不写任何文件。"""
    index_dir = Path(index_dir)
    meta_path = index_dir / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{index_dir} 里没有 {META}：不是 clipedu 索引，或还没建完 / index not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise _corrupt(index_dir, f"{META} 的 format/version 不对（{meta.get('format')!r}）")
        emb_path, items_path = index_dir / meta["embeddings"]["file"], index_dir / meta["items"]["file"]
        count, dim, dtype = int(meta["count"]), int(meta["dim"]), meta["dtype"]
    except CorruptIndexError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as e:
        raise _corrupt(index_dir, f"{META} 读不懂（{type(e).__name__}: {str(e)[:80]}）") from None
    for path, key in ((emb_path, "embeddings"), (items_path, "items")):
        if not path.is_file():
            raise _corrupt(index_dir, f"缺少 {path.name}")
        if verify and file_sha256(path) != meta[key]["sha256"]:
            raise _corrupt(index_dir, f"{path.name} 的 SHA-256 与 {META} 记录的不符（文件被改动或截断）")
    try:
        embeddings = np.load(emb_path, allow_pickle=False, mmap_mode="r")
        items = [json.loads(line) for line in items_path.read_text(encoding="utf-8").splitlines()]
    except (ValueError, OSError, UnicodeDecodeError, RecursionError) as e:
        raise _corrupt(index_dir, f"数据文件读不出（{type(e).__name__}: {str(e)[:80]}）") from None
    if embeddings.shape != (count, dim) or str(embeddings.dtype) != dtype or len(items) != count:
        raise _corrupt(index_dir, f"形状 {embeddings.shape}/{embeddings.dtype}/{len(items)} 条，"
                                  f"与记录的 ({count}, {dim})/{dtype} 不符")
    embeddings = np.ascontiguousarray(embeddings)  # 读进内存，之后与磁盘文件无关
    if verify and not np.isfinite(embeddings).all():
        raise _corrupt(index_dir, "向量里有 NaN 或 Inf")
    if any(not isinstance(it, dict) or not isinstance(it.get("path"), str) for it in items):
        raise _corrupt(index_dir, f"{items_path.name} 里有不是 {{\"path\": ...}} 的行")
    return ImageIndex(Path(meta["root"]), embeddings, items, meta)


# ---------------------------------------------------------------- 建立
@dataclass
class BuildReport:
    """一次 ``build_index`` 的结果，也写进 index.json 的 ``last_build``。"""

    count: int = 0                                      # 索引里的图像数
    embedded: int = 0                                   # 这次新算的图像数
    kept: int = 0                                       # 从旧索引原样保留的图像数
    removed: int = 0                                    # 旧索引里已删除或已改动的条目数
    chunks_total: int = 0                               # 这次要处理的块数
    chunks_reused: int = 0                              # 上次中断前已完成、直接复用的块数
    skipped: Counter = field(default_factory=Counter)   # 坏文件：原因 → 个数
    ignored: Counter = field(default_factory=Counter)   # 不是候选文件：符号链接、非图像扩展名
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped"], d["ignored"] = dict(self.skipped), dict(self.ignored)
        return d


def _old_vectors(out: Path, fingerprint: str, dtype: str, log) -> dict[str, tuple[dict, np.ndarray]]:
    """旧索引里可复用的向量：同一个模型、同一种 dtype 才复用。"""
    if not (out / META).is_file():
        return {}
    try:
        old = load_index(out)
    except (CorruptIndexError, FileNotFoundError) as e:
        log(f"旧索引不可用，将全部重建：{e}")
        return {}
    if old.meta.get("model_sha256") != fingerprint or old.meta.get("dtype") != dtype:
        log("旧索引用的是另一个模型或另一种 dtype，将全部重建")
        return {}
    return {it["path"]: (it, old.embeddings[i]) for i, it in enumerate(old.items)}


def _chunk_key(chunk: list[dict], fingerprint: str, settings: dict) -> str:
    blob = json.dumps({"files": chunk, "model": fingerprint, **settings}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _embed_chunk(encoder, root: Path, chunk: list[dict], settings: dict, strict: bool, batch_size: int):
    """算一块：返回 (好文件的条目, 向量 [n, D], 坏文件 [(path, reason)])。

    每攒够 batch_size 张图就编码并丢掉像素：内存里最多一批图像，与块的大小无关。"""
    good, arrays, vectors, bad = [], [], [], []
    for entry in chunk:
        try:
            arrays.append(load_image_file(root / entry["path"], encoder.image_size,
                                          settings["max_bytes"], settings["max_pixels"]))
            good.append(entry)
        except BadImage as e:
            if strict:
                raise BadImageError(f"坏图像（{e.reason}）：{root / entry['path']}；{e.detail}。"
                                    "--strict 在第一张坏图处停止；去掉它则跳过并计数 / bad image in strict mode") from None
            bad.append({"path": entry["path"], "reason": e.reason})
        if len(arrays) == batch_size or (arrays and entry is chunk[-1]):
            vectors.append(encoder.encode_images(np.stack(arrays)))
            arrays = []
    dim = encoder.embed_dim
    return good, (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), bad


def _load_chunk(partial: Path, key: str, dim: int):
    """读一个已完成的块；缺文件或读不出就当作没完成（返回 None）。"""
    try:
        info = json.loads((partial / f"chunk-{key}.json").read_text(encoding="utf-8"))
        vectors = np.load(partial / f"chunk-{key}.npy", allow_pickle=False)
    except (OSError, ValueError, RecursionError):
        return None
    if vectors.shape != (len(info["entries"]), dim):
        return None
    return info["entries"], vectors, info["skipped"]


def _image_root(images: str | os.PathLike) -> Path:
    """--images：必须是已存在的目录（不存在、文件、FIFO、符号链接环各有说明）。"""
    from ..outdir import require_dir

    return Path(require_dir(images, "图片文件夹", "--images")).resolve()


def build_index(encoder, images: str | os.PathLike, out: str | os.PathLike, *, chunk_size: int = 256,
                batch_size: int = 64, dtype: str = "float16", strict: bool = False,
                max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                progress: bool = True, throttle: float = 0.0, log: Callable = print) -> BuildReport:
    """给 images 文件夹建（或更新）索引，写到 out；返回 BuildReport。"""
    t0 = time.perf_counter()
    from ..outdir import ensure_dir

    root, out = _image_root(images), Path(out)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype 应为 {' | '.join(DTYPES)}，实际为 {dtype!r}")
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"--chunk-size 与 --batch-size 应为正整数，实际为 {chunk_size}、{batch_size}")
    ensure_dir(out)  # 是文件、在文件之下、不可写：一行说明，指明 --out
    report = BuildReport()
    files, report.ignored = scan_images(root, exclude=out.resolve())
    old = _old_vectors(out, encoder.fingerprint, dtype, log)
    kept = [f for f in files if f["path"] in old and old[f["path"]][0] == f]
    kept_paths = {f["path"] for f in kept}
    todo = [f for f in files if f["path"] not in kept_paths]
    report.kept, report.removed = len(kept), len(old) - len(kept)
    if old and not todo and not report.removed:  # 什么都没变：不重写，正在读这个索引的服务也不受影响
        report.count, report.seconds = len(kept), round(time.perf_counter() - t0, 3)
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
        return report

    settings = {"dtype": dtype, "max_bytes": max_bytes, "max_pixels": max_pixels, "image_size": encoder.image_size}
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    keys = [_chunk_key(c, encoder.fingerprint, settings) for c in chunks]
    partial = out / PARTIAL
    partial.mkdir(exist_ok=True)
    for stale in partial.iterdir():  # 文件清单变了的旧块用不上了
        if stale.name.split(".")[0].removeprefix("chunk-") not in keys:
            stale.unlink(missing_ok=True)
    report.chunks_total = len(chunks)

    entries = list(kept)
    vectors = [np.stack([old[f["path"]][1] for f in kept]).astype(np.float32)] if kept else []
    bar = _progress(len(todo), progress)
    for chunk, key in zip(chunks, keys):
        done = _load_chunk(partial, key, encoder.embed_dim)
        if done is not None:
            report.chunks_reused += 1
        else:
            good, vecs, bad = _embed_chunk(encoder, root, chunk, settings, strict, batch_size)
            done = good, vecs.astype(dtype), bad
            _write_npy(partial / f"chunk-{key}.npy", done[1])
            write_json(partial / f"chunk-{key}.json", {"entries": good, "skipped": bad})  # 最后写：完成标记
            if throttle > 0:
                time.sleep(throttle)
        good, vecs, bad = done
        entries += good
        vectors.append(np.asarray(vecs, dtype=np.float32))
        report.embedded += len(good)
        report.skipped.update(b["reason"] for b in bad)
        bar.update(len(chunk))
    bar.close()

    order = sorted(range(len(entries)), key=lambda i: entries[i]["path"])
    matrix = (np.concatenate(vectors) if vectors else np.zeros((0, encoder.embed_dim), np.float32))[order]
    report.count = len(order)
    report.seconds = round(time.perf_counter() - t0, 3)
    _commit(out, root, [entries[i] for i in order], matrix.astype(dtype), encoder, report)
    for leftover in partial.iterdir():
        leftover.unlink(missing_ok=True)
    partial.rmdir()
    return report


def _commit(out: Path, root: Path, items: list[dict], matrix: np.ndarray, encoder, report: BuildReport) -> None:
    """写新一代的数据文件，原子替换 index.json，最后删掉旧代。"""
    gen = uuid.uuid4().hex[:12]
    emb_name, items_name = f"embeddings-{gen}.npy", f"items-{gen}.jsonl"
    _write_npy(out / emb_name, matrix)
    lines = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    atomic_write(out / items_name, lambda f: f.write(lines.encode("utf-8")))
    meta = {
        "format": FORMAT, "version": VERSION, "root": str(root), "count": len(items),
        "dim": int(matrix.shape[1]), "dtype": str(matrix.dtype), "model_sha256": encoder.fingerprint,
        "image_size": encoder.image_size,
        "embeddings": {"file": emb_name, "sha256": file_sha256(out / emb_name)},
        "items": {"file": items_name, "sha256": file_sha256(out / items_name)},
        "last_build": report.to_dict(),
    }
    write_json(out / META, meta)
    keep = {emb_name, items_name}
    for p in list(out.glob("embeddings-*.npy")) + list(out.glob("items-*.jsonl")):
        if p.name not in keep:
            p.unlink(missing_ok=True)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="建索引", unit="张", disable=not enabled, leave=False)

"""WebDataset 流式数据：tar 分片、多进程、按节点与 worker 切分（见第 5 章 sec-code-data-real）。

数据大到一块盘放不下、或者随机读小文件太慢时，把图文对打包成几百 MB 一个的 tar 分片，
顺序读取即可（``python -m clipedu data shard`` 负责打包）。流水线：

    分片列表（每轮按种子打乱、无限循环）→ 按节点切分 → 按 worker 切分 → 读 tar → 缓冲区打乱 → 稳健解码

每个 (rank, worker) 读互不相同的分片，所以分片数至少要等于 进程数 × worker 数。
样本为 ``(image, caption, -1)``；坏条目跳过计数，记录跟着下一个好样本带回主进程（见 robust.py）。
"""
from __future__ import annotations

import functools
import glob
import itertools
import os
import random
import re
import tarfile
import zlib
from typing import Callable, NamedTuple, Optional

import webdataset as wds
from torch.utils.data import IterableDataset

from ..errors import UsageError
from .robust import (MAX_IMAGE_BYTES, BadSample, BadSampleCounter, BadSampleError, Sample, clean_caption,
                     decode_image, decode_line, open_regular, strict_error)

IMAGE_EXTS = ("jpg", "jpeg", "jfif", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm", "pbm", "pnm")
# PIL 的格式名 → 分片里的扩展名（data shard 按图像的真实格式取名，不按原文件名，见 shard.py）
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff", "GIF": "gif", "PPM": "ppm"}
MAX_CONSECUTIVE_BAD = 200  # 连续这么多个坏样本就停：数据多半整体坏了，再读下去只是空转
MAX_MEMBER_BYTES = MAX_IMAGE_BYTES  # tar 里单个条目的上限：更大的不读进内存，按 too_large 计数


class TooLarge(NamedTuple):
    """超过上限、没有读进内存的 tar 条目（只记下它的大小）。"""
    size: int


def tar_members(src, on_error: Callable[[BadSample], None], max_bytes: Optional[int] = None):
    """``{"url": 分片}`` → 分片里的每个普通文件 ``{"fname", "data", "__url__"}``；每个分片之后产出 ``{}``
    （分组的边界，样本不跨分片）。

    代替 ``wds.tarfile_to_samples`` 的前两级，原因有二：它把每个条目整个读进内存（一个几 GB 的条目就能
    吃光内存），且用 ``gopen`` 打开分片（以 ``pipe:`` 开头的名字会被当成 shell 命令执行）。这里只用
    ``open_regular`` 打开本地普通文件，流式读 tar，超过 ``max_bytes`` 的条目只记大小、不读内容。
    读不下去的分片（不是 tar、截断）记一个坏样本，接着读下一个分片。
    """
    max_bytes = MAX_MEMBER_BYTES if max_bytes is None else max_bytes
    for item in src:
        url = item["url"]
        try:
            with open_regular(url) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for info in tar:
                    if not info.isreg() or info.name.startswith("__"):
                        continue
                    if info.size > max_bytes:
                        data = TooLarge(info.size)  # 流式 tar 跳过它时按块读过、不整个留在内存
                    else:
                        data = tar.extractfile(info).read()
                    yield {"fname": info.name, "data": data, "__url__": url}
                    tar.members = []  # 流式读：不攒下已读条目的元数据
        except BadSample as e:
            on_error(BadSample(e.reason, url, e.detail))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            on_error(BadSample("bad_tar_member", url, f"{type(e).__name__}: {e}"))
        yield {}


MAX_SHARDS = 1_000_000  # 一个分片说明最多展开成这么多个文件（LAION-5B 按 1 万一片约 50 万片）
_RANGE = re.compile(r"^([0-9]+|[A-Za-z])\.\.([0-9]+|[A-Za-z])(?:\.\.([0-9]+))?$")


def expand_braces(pattern: str):
    """``shard-{000000..000009}.tar``、``{a,b}``（可嵌套）按 bash 的规则逐个产出，惰性展开。

    ``braceexpand``（webdataset 用的）先把全部结果放进列表：``{0..999999999}`` 会先吃光内存。
    这里是生成器，调用方数到上限就停。数字范围有前导零时补齐到相同宽度。
    """
    depth, start = 0, None
    for i, ch in enumerate(pattern):
        if ch == "{":
            depth, start = depth + 1, i if depth == 0 else start
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                yield from _expand_group(pattern[:start], pattern[start + 1:i], pattern[i + 1:])
                return
    yield pattern


def _expand_group(prefix: str, body: str, suffix: str):
    m = _RANGE.match(body)
    if m:
        a, b, step = m.group(1), m.group(2), int(m.group(3) or 1) or 1
        if a.isdigit() != b.isdigit():  # “{1..a}” 不是范围，保留字面
            yield from (prefix + "{" + body + "}" + rest for rest in expand_braces(suffix))
            return
        lo, hi = (int(a), int(b)) if a.isdigit() else (ord(a), ord(b))
        padded = a.isdigit() and any(len(x) > 1 and x[0] == "0" for x in (a, b))
        width = max(len(a), len(b)) if padded else 0
        for v in range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step):
            yield from expand_braces(prefix + (str(v).zfill(width) if a.isdigit() else chr(v)) + suffix)
        return
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(body):  # 只在最外层的逗号处切开
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    parts.append(body[last:])
    if len(parts) == 1:  # “{x}” 不是花括号展开，保留字面
        yield from (prefix + "{" + body + "}" + rest for rest in expand_braces(suffix))
        return
    for part in parts:
        yield from expand_braces(prefix + part + suffix)


def expand_shards(spec) -> list[str]:
    """分片说明 → 本地 tar 文件列表：目录、花括号模式 ``shard-{000000..000009}.tar``、
    ``::`` 连接的多个模式，或它们组成的列表。只接受普通文件（FIFO、设备会让读取永远阻塞）。"""
    if isinstance(spec, (list, tuple)):
        return [u for s in spec for u in expand_shards(s)]
    spec = os.path.expanduser(str(spec))
    if os.path.isdir(spec):
        urls = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not urls:
            raise FileNotFoundError(f"目录 {spec} 里没有 .tar 分片；请先用 python -m clipedu data shard 生成")
    else:
        urls = list(itertools.islice((u for part in spec.split("::") for u in expand_braces(part)), MAX_SHARDS + 1))
        if len(urls) > MAX_SHARDS:
            raise UsageError(f"分片说明 {spec!r} 展开后超过 {MAX_SHARDS} 个文件；请检查花括号范围 "
                             "/ too many shards")
    missing = [u for u in urls if not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"找不到分片 {missing[:3]}{' 等' if len(missing) > 3 else ''}"
                                f"（共 {len(missing)} 个）；分片说明为 {spec!r}")
    odd = [u for u in urls if not os.path.isfile(u)]
    if odd:
        raise ValueError(f"分片 {odd[:3]} 不是普通文件（目录、FIFO 或设备）；请检查 --data-path / not a regular file")
    return urls


class _PassGuard:
    """同一个 worker 里 ShardList 与计数级共用的小账本：这一轮从 tar 里读出了多少条目。"""

    def __init__(self):
        self.raw = 0

    def count(self, src):
        for sample in src:
            self.raw += 1
            yield sample


class ShardList(IterableDataset):
    """产出本进程、本 worker 的 ``{"url": 分片}``；每轮用 (seed, 轮次) 打乱，``repeat`` 时无限循环（训练按步数停）。

    切分与 ``wds.split_by_node`` 再 ``wds.split_by_worker`` 相同：``urls[rank::world][worker::workers]``。
    无限循环时，若一整轮分片没读出任何条目（0 字节、不是 tar、空 tar），就报错而不是空转。
    """

    def __init__(self, urls: list[str], seed: int = 0, shuffle: bool = True, repeat: bool = True,
                 guard: _PassGuard | None = None):
        self.urls, self.seed, self.shuffle, self.repeat = list(urls), seed, shuffle, repeat
        self.guard = guard or _PassGuard()

    def __iter__(self):
        rank, world, worker, workers = wds.utils.pytorch_worker_info()
        if len(self.urls) < world * workers:
            # 否则有的 worker 一个分片也分不到：无限循环时它永远产不出样本
            raise ValueError(f"分片数 {len(self.urls)} 少于 进程数 {world} × 每进程 worker 数 {workers}；"
                             "请用更小的 --shard-size 重新分片，或减少 --num-workers")
        epoch = 0
        while True:
            urls = list(self.urls)
            if self.shuffle:  # 所有 rank 用同一个种子，打乱结果相同，切分后才互不重叠
                random.Random(self.seed * 100003 + epoch).shuffle(urls)
            mine = urls[rank::world][worker::workers]
            self.guard.raw = 0
            for url in mine:
                yield {"url": url}
            epoch += 1
            if not self.repeat:
                return
            if self.guard.raw == 0:
                raise BadSampleError(
                    f"读完一整轮分片 {sorted(mine)[:5]}{' 等' if len(mine) > 5 else ''}，一个条目也没读出："
                    "分片是空的、0 字节、不是 tar 或已损坏。请重新生成分片（python -m clipedu data shard） "
                    "/ no readable sample in shards")


class RobustDecode:
    """流水线最后一级：dict 样本 → ``Sample(image, caption, -1)``；坏的跳过并记进下一个好样本。

    两道上限：连续 ``max_consecutive_bad`` 个坏样本，或本 worker 的坏样本比例超过 ``max_bad_fraction``，
    都会报错并指明分片，而不是在坏数据上无限空转。
    """

    def __init__(self, transform: Optional[Callable], strict: bool, max_bad_fraction: float = 0.01,
                 max_consecutive_bad: int = MAX_CONSECUTIVE_BAD):
        self.transform, self.strict = transform, strict
        self.max_consecutive_bad = max_consecutive_bad
        self.counter = BadSampleCounter(max_bad_fraction)
        self.consecutive = 0
        self.pending: list[str] = []  # 本进程内尚未交出的坏样本原因（含 tar 读取错误）
        self.pending_where: dict[str, str] = {}

    def _bad(self, bad: BadSample) -> None:
        if self.strict:
            raise strict_error(bad)
        self.pending.append(bad.reason)
        self.pending_where.setdefault(bad.reason, bad.describe())
        self.counter.add(bad.reason, bad.describe())
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive_bad:
            raise BadSampleError(
                f"连续 {self.consecutive} 个坏样本，最近一个：{bad.where}（{bad.reason}：{bad.detail}）。"
                f"分片里多半没有可用的图文对；请检查或重新生成分片 / too many consecutive bad samples")
        self.counter.check()

    def on_tar_error(self, exn: Exception) -> bool:
        """给 webdataset 的 handler（分组时的重名条目等）：记下这个坏样本，继续读。"""
        where = " ".join(str(a) for a in exn.args if a) or "tar"
        self._bad(BadSample("bad_tar_member", where, type(exn).__name__))
        return True

    def decode(self, sample: dict) -> tuple:
        where = f"{sample.get('__url__')} 中的样本 {sample.get('__key__')}"
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None or "txt" not in sample:
            raise BadSample("malformed_row", where, f"缺少图像或 txt 文本，只有 {sorted(k for k in sample if not k.startswith('__'))}")
        big = [f"{k} {v.size} 字节" for k, v in sample.items() if isinstance(v, TooLarge)]
        if big:
            raise BadSample("too_large", where, f"条目 {', '.join(big)}，超过单个条目的上限")
        caption = clean_caption(decode_line(sample["txt"], "utf-8", where), where)
        image = decode_image(sample[ext], where)
        return (self.transform(image) if self.transform else image), caption

    def __call__(self, src):
        for sample in src:
            try:
                image, caption = self.decode(sample)
            except BadSample as e:
                self._bad(e)
                continue
            self.consecutive = 0
            self.counter.add_good()
            out = Sample(image, caption, -1, self.pending, self.pending_where)
            self.pending, self.pending_where = [], {}
            yield out


def build_wds_dataset(shards, transform: Optional[Callable] = None, seed: int = 0, shuffle_buffer: int = 1000,
                      repeat: bool = True, strict: bool = False, max_bad_fraction: float = 0.01,
                      max_consecutive_bad: int = MAX_CONSECUTIVE_BAD) -> wds.DataPipeline:
    """流式训练集（IterableDataset）。``repeat=False`` 时只读一遍，适合评估或检查分片。"""
    urls = expand_shards(shards)
    decode = RobustDecode(transform, strict, max_bad_fraction, max_consecutive_bad)
    guard = _PassGuard()
    stages = [ShardList(urls, seed=seed, shuffle=repeat, repeat=repeat, guard=guard),
              functools.partial(tar_members, on_error=decode._bad),
              functools.partial(wds.tariterators.group_by_keys, handler=decode.on_tar_error), guard.count]
    if shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(100, shuffle_buffer), seed=seed))
    stages.append(decode)
    return wds.DataPipeline(*stages)


__all__ = ["IMAGE_EXTS", "FORMAT_EXT", "MAX_CONSECUTIVE_BAD", "MAX_MEMBER_BYTES", "MAX_SHARDS", "expand_braces", "ShardList", "RobustDecode",
           "build_wds_dataset", "expand_shards", "tar_members"]

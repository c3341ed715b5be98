"""WebDataset 流式数据：tar 分片、多进程、按节点与 worker 切分（见第 5 章 sec-code-data-real）。

数据大到一块盘放不下、或者随机读小文件太慢时，把图文对打包成几百 MB 一个的 tar 分片，
顺序读取即可（``python -m clipedu data shard`` 负责打包）。流水线：

    分片列表（每轮按种子打乱、无限循环）→ 按节点切分 → 按 worker 切分 → 读 tar → 缓冲区打乱 → 稳健解码

每个 (rank, worker) 读互不相同的分片，所以分片数至少要等于 进程数 × worker 数。
样本为 ``(image, caption, -1)``；坏条目跳过计数，记录跟着下一个好样本带回主进程（见 robust.py）。
"""
from __future__ import annotations

import glob
import os
import random
from typing import Callable, Optional

import webdataset as wds
from torch.utils.data import IterableDataset

from .robust import BadSample, Sample, clean_caption, decode_image, decode_line, strict_error

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")


def expand_shards(spec) -> list[str]:
    """分片说明 → 本地 tar 文件列表：目录、花括号模式 ``shard-{000000..000009}.tar``、
    ``::`` 连接的多个模式，或它们组成的列表。"""
    if isinstance(spec, (list, tuple)):
        return [u for s in spec for u in expand_shards(s)]
    spec = os.path.expanduser(str(spec))
    if os.path.isdir(spec):
        urls = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not urls:
            raise FileNotFoundError(f"目录 {spec} 里没有 .tar 分片；请先用 python -m clipedu data shard 生成")
        return urls
    urls = wds.shardlists.expand_urls(spec)
    missing = [u for u in urls if not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"找不到分片 {missing[:3]}{' 等' if len(missing) > 3 else ''}"
                                f"（共 {len(missing)} 个）；分片说明为 {spec!r}")
    return urls


class ShardList(IterableDataset):
    """产出 ``{"url": 分片}``；每轮用 (seed, 轮次) 打乱，``repeat`` 时无限循环（训练按步数停）。"""

    def __init__(self, urls: list[str], seed: int = 0, shuffle: bool = True, repeat: bool = True):
        self.urls, self.seed, self.shuffle, self.repeat = list(urls), seed, shuffle, repeat

    def __iter__(self):
        rank, world, _, workers = wds.utils.pytorch_worker_info()
        if len(self.urls) < world * workers:
            # 否则有的 worker 一个分片也分不到：无限循环时它永远产不出样本
            raise ValueError(f"分片数 {len(self.urls)} 少于 进程数 {world} × 每进程 worker 数 {workers}；"
                             "请用更小的 --shard-size 重新分片，或减少 --num-workers")
        epoch = 0
        while True:
            urls = list(self.urls)
            if self.shuffle:  # 所有 rank 用同一个种子，打乱结果相同，切分后才互不重叠
                random.Random(self.seed * 100003 + epoch).shuffle(urls)
            for url in urls:
                yield {"url": url}
            epoch += 1
            if not self.repeat:
                return


class RobustDecode:
    """流水线最后一级：dict 样本 → ``Sample(image, caption, -1)``；坏的跳过并记进下一个好样本。"""

    def __init__(self, transform: Optional[Callable], strict: bool):
        self.transform, self.strict = transform, strict
        self.pending: list[str] = []  # 本进程内尚未交出的坏样本原因（含 tar 读取错误）

    def on_tar_error(self, exn: Exception) -> bool:
        """给 webdataset 的 handler：记下读不出的条目，继续读。"""
        bad = BadSample("bad_tar_member", " ".join(str(a) for a in exn.args if a), type(exn).__name__)
        if self.strict:
            raise strict_error(bad) from exn
        self.pending.append(bad.reason)
        return True

    def decode(self, sample: dict) -> tuple:
        where = f"{sample.get('__url__')} 中的样本 {sample.get('__key__')}"
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None or "txt" not in sample:
            raise BadSample("malformed_row", where, f"缺少图像或 txt 文本，只有 {sorted(k for k in sample if not k.startswith('__'))}")
        caption = clean_caption(decode_line(sample["txt"], "utf-8", where), where)
        image = decode_image(sample[ext], where)
        return (self.transform(image) if self.transform else image), caption

    def __call__(self, src):
        for sample in src:
            try:
                image, caption = self.decode(sample)
            except BadSample as e:
                if self.strict:
                    raise strict_error(e) from None
                self.pending.append(e.reason)
                continue
            out = Sample(image, caption, -1, self.pending)
            self.pending = []
            yield out


def build_wds_dataset(shards, transform: Optional[Callable] = None, seed: int = 0, shuffle_buffer: int = 1000,
                      repeat: bool = True, strict: bool = False) -> wds.DataPipeline:
    """流式训练集（IterableDataset）。``repeat=False`` 时只读一遍，适合评估或检查分片。"""
    urls = expand_shards(shards)
    decode = RobustDecode(transform, strict)
    stages = [ShardList(urls, seed=seed, shuffle=repeat, repeat=repeat), wds.split_by_node, wds.split_by_worker,
              wds.tarfile_to_samples(handler=decode.on_tar_error)]
    if shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(100, shuffle_buffer), seed=seed))
    stages.append(decode)
    return wds.DataPipeline(*stages)


__all__ = ["IMAGE_EXTS", "ShardList", "RobustDecode", "build_wds_dataset", "expand_shards"]

"""按“已消耗样本数”定位的全局批采样器：分布式分片与精确续训的基础。

见第 5 章 sec-code-resume。

把整个训练看成一条无限长的样本下标流：第 e 轮是 ``randperm(N, seed + e)``，首尾相接。
第 s 步的全局批是流上的位置 ``[s·B, (s+1)·B)``；rank r 取其中第 r 段（长 B/world）。
所以数据位置只需一个整数 ``samples_seen``，续训时从这里接着切即可，与进程数、
DataLoader worker 数都无关；单进程与 world 个进程拼起来看到的是同一批样本、同一顺序。
``batch_stream`` 按这个顺序无限地产出本进程的批，训练循环只管 ``next(stream)``。
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, IterableDataset

from .seeding import rank_seed


class GlobalBatchSampler(torch.utils.data.Sampler):
    """每次产出本 rank 在一个全局批里的下标列表；start_sample 是已消耗的全局样本数。"""

    def __init__(self, dataset_size: int, global_batch: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, start_sample: int = 0,
                 shuffle: bool = True):
        if dataset_size <= 0:
            raise ValueError(f"训练集为空（样本数 {dataset_size}）；"
                             f"请检查数据路径或 --dataset")
        if global_batch % world_size != 0:
            raise ValueError(f"全局批大小 {global_batch} 不能被进程数 {world_size} "
                             f"整除")
        self.n, self.global_batch = dataset_size, global_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.start_sample, self.shuffle = seed, start_sample, shuffle
        self.local_batch = global_batch // world_size
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm[offset]

    def __iter__(self):
        position = self.start_sample
        while True:
            begin = position + self.rank * self.local_batch  # 本 rank 在全局批中那一段
            yield [self._index(p) for p in range(begin, begin + self.local_batch)]
            position += self.global_batch


def batch_stream(dataset, global_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_sample: int = 0, num_workers: int = 0):
    """无限地产出本进程的批 ``Batch(images, captions, labels, bad, seen)``，
    从第 ``start_sample`` 个全局样本接着读。"""
    from .data.robust import Batch, collate
    from .stop_signal import ignore_stop_signals

    local_batch = global_batch // world_size
    if isinstance(dataset, IterableDataset):
        # 流式数据（WebDataset）没有下标：续训时跳过已读的批（分片由数据集按 rank 切分）
        loader = DataLoader(dataset, batch_size=local_batch, collate_fn=collate,
                            num_workers=num_workers, drop_last=True,
                            worker_init_fn=ignore_stop_signals)
        skip = start_sample // global_batch
        while True:
            for batch in loader:
                if skip > 0:
                    skip -= 1
                    continue
                yield batch
    sampler = GlobalBatchSampler(len(dataset), global_batch, rank, world_size,
                                 seed=seed, start_sample=start_sample)
    if hasattr(dataset, "get_batch") and num_workers == 0:
        for idx in sampler:  # ShapesDataset 的批量快速路径
            images, captions, labels = dataset.get_batch(idx)
            yield Batch(images, captions, labels, {}, len(idx))
    # 自带 generator：DataLoader 建迭代器时要取一个随机种子，不给它就会从全局随机数里
    # 取一个，续训时全局随机数（数据增强、dropout 用的）就比一口气跑完的错开一位，
    # 结果不再逐位相同
    generator = torch.Generator().manual_seed(rank_seed(seed, rank) + start_sample)
    # worker 忽略 SIGTERM（stop_signal.ignore_stop_signals）：发给整个进程组的信号只由主进程处理
    yield from DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                          num_workers=num_workers, generator=generator,
                          worker_init_fn=ignore_stop_signals)

"""Chinese-CLIP 格式（MUGE、Flickr30K-CN、COCO-CN）：训练集与检索评估集（见第 5 章 sec-code-data-real）。

一个数据目录里每个划分（train/valid/test）有两个文件：
- ``{split}_imgs.tsv``：每行 ``image_id<TAB>base64 编码的图像``；
- ``{split}_texts.jsonl``：每行 ``{"text_id": 1, "text": "……", "image_ids": [1001, …]}``。

一张图常有几条文本。训练时每个 (文本, 图像) 对是一个样本；检索评估时图像与文本分开编码。
图像文件可能有几十 GB，所以只记下每行的字节偏移，读样本时再 seek 过去解码。
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

from .robust import (BadSample, BadSampleCounter, RobustDataset, clean_caption, decode_image,
                     decode_line, iter_lines, load_with_substitutes, open_regular, strict_error)

MAX_IMAGE_LINE_BYTES = 64 * 2**20  # imgs.tsv 一行（id + base64 图像）的上限


def split_files(root: str, split: str) -> tuple[str, str]:
    """返回 (imgs.tsv, texts.jsonl) 路径；缺文件时说明应有的布局。"""
    root = os.path.expanduser(root)
    imgs, texts = (os.path.join(root, f"{split}_imgs.tsv"), os.path.join(root, f"{split}_texts.jsonl"))
    missing = [p for p in (imgs, texts) if not os.path.exists(p)]
    for p in (imgs, texts):
        if os.path.exists(p) and not os.path.isfile(p):
            raise ValueError(f"{p} 不是普通文件（目录、FIFO 或设备）；请检查 --data-path/--root / not a regular file")
    if missing:
        raise FileNotFoundError(
            f"Chinese-CLIP 格式的数据目录 {root} 缺少 {missing}。应有 {split}_imgs.tsv（每行 image_id\\tbase64）"
            f"与 {split}_texts.jsonl（每行 {{\"text_id\", \"text\", \"image_ids\"}}）；"
            "MUGE、Flickr30K-CN、COCO-CN 可从 Chinese-CLIP 项目（github.com/OFA-Sys/Chinese-CLIP）的数据说明下载 / missing files"
        )
    return imgs, texts


class ImageTSV:
    """``image_id<TAB>base64`` 文件的字节偏移索引：内存里只有 id → (偏移, 长度)。"""

    def __init__(self, path: str, report: Callable[[BadSample], None]):
        self.path = path
        self.offsets: dict[str, tuple[int, int]] = {}
        self._fh, self._pid = None, None
        offset = 0
        with open_regular(path) as f:
            for lineno, (raw, size) in enumerate(iter_lines(f, MAX_IMAGE_LINE_BYTES), start=1):
                if raw is None:
                    report(BadSample("too_large", f"{path} 第 {lineno} 行", f"{size} 字节，超过上限"))
                else:
                    self._index_line(raw, offset, lineno, report)
                offset += size

    def _index_line(self, raw: bytes, offset: int, lineno: int, report) -> None:
        where = f"{self.path} 第 {lineno} 行"
        if not raw.strip():
            return
        tab = raw.find(b"\t")
        try:
            if tab <= 0 or not raw[tab + 1:].strip():
                raise BadSample("malformed_row", where, "应为 image_id<TAB>base64，缺少制表符、id 或图像")
            image_id = decode_line(raw[:tab], "utf-8", where).strip()
            if image_id in self.offsets:
                raise BadSample("duplicate_id", where, f"image_id {image_id} 重复，保留第一个")
        except BadSample as e:
            report(e)
            return
        self.offsets[image_id] = (offset + tab + 1, len(raw) - tab - 1)

    def read(self, image_id: str) -> bytes:
        """读出一张图的原始字节。每个 DataLoader worker 各开一个文件句柄（fork 后不能共用）。"""
        if self._fh is None or self._pid != os.getpid():
            self._fh, self._pid = open_regular(self.path), os.getpid()
        offset, length = self.offsets[image_id]
        self._fh.seek(offset)
        data = self._fh.read(length).strip()
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadSample("corrupt_image", f"{self.path} image_id {image_id}", f"base64 解不开：{e}") from None

    def __getstate__(self):  # 文件句柄不能 pickle 给 worker
        return {**self.__dict__, "_fh": None, "_pid": None}


def read_texts(path: str, known_ids, report: Callable[[BadSample], None]) -> list[tuple[str, str, list[str]]]:
    """读 texts.jsonl，返回 [(text_id, text, [image_id, …])]；坏行交给 ``report``。"""
    texts, seen = [], set()
    with open_regular(path) as f:
        for lineno, (raw, size) in enumerate(iter_lines(f, 2**20), start=1):
            where = f"{path} 第 {lineno} 行"
            if raw is None:
                report(BadSample("malformed_row", where, f"一行有 {size} 字节，超过上限"))
                continue
            if not raw.strip():
                continue
            try:
                texts.append(_parse_text_line(raw, where, seen, known_ids))
            except BadSample as e:
                report(e)
    return texts


def _parse_text_line(raw: bytes, where: str, seen: set, known_ids) -> tuple[str, str, list[str]]:
    try:
        obj = json.loads(decode_line(raw, "utf-8", where))
    except (json.JSONDecodeError, RecursionError) as e:  # 几万层括号：json 递归太深，只丢这一行
        raise BadSample("malformed_row", where, f"不是合法 JSON：{str(e)[:80]}") from None
    if not isinstance(obj, dict) or "text_id" not in obj or not isinstance(obj.get("image_ids"), list):
        raise BadSample("malformed_row", where, '应为 {"text_id", "text", "image_ids": [...]}')
    text_id = str(obj["text_id"])
    if text_id in seen:
        raise BadSample("duplicate_id", where, f"text_id {text_id} 重复，保留第一个")
    text = clean_caption(obj.get("text"), where)
    # id 在 tsv 里是字符串，在 jsonl 里常是整数：统一成字符串再比较
    image_ids = [str(i) for i in obj["image_ids"]]
    good = [i for i in image_ids if i in known_ids]
    if not good:
        raise BadSample("unknown_image_id", where, f"image_ids {image_ids} 都不在 imgs.tsv 里")
    seen.add(text_id)
    return text_id, text, good


class CnClipDataset(RobustDataset):
    """训练集：每个 (文本, 图像) 对一个样本 ``(image, text, -1)``。"""

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 strict: bool = False, max_bad_fraction: float = 0.01):
        super().__init__(strict, max_bad_fraction)
        imgs_path, texts_path = split_files(root, split)
        self.transform = transform
        self.images = ImageTSV(imgs_path, self.index_problem)
        self.texts = read_texts(texts_path, self.images.offsets, self.index_problem)
        self.pairs = [(t, i) for t, (_, _, ids) in enumerate(self.texts) for i in ids]
        self.finish_index(len(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, k: int) -> tuple:
        t, image_id = self.pairs[k]
        image = decode_image(self.images.read(image_id), f"{self.images.path} image_id {image_id}")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.texts[t][1], -1


class _ImagesOnly(Dataset):
    """检索评估用：按顺序给出每张图 ``(image, "", 图像序号)``，可直接交给 encode_dataset。"""

    def __init__(self, tsv: ImageTSV, image_ids: list[str], transform, strict: bool, counter: BadSampleCounter):
        self.tsv, self.image_ids, self.transform, self.strict = tsv, image_ids, transform, strict
        self.counter, self.known_bad = counter, set()  # 坏图计入检索集的 bad_samples

    def __len__(self) -> int:
        return len(self.image_ids)

    def _load(self, k: int) -> tuple:
        image_id = self.image_ids[k]
        image = decode_image(self.tsv.read(image_id), f"{self.tsv.path} image_id {image_id}")
        return (self.transform(image) if self.transform else image), "", k

    def __getitem__(self, k: int):
        # 评估时坏图被另一张好图替换并计数，检索指标因此略偏低而不是崩溃；比例超限则停止
        sample = load_with_substitutes(len(self), k, self._load, self.strict, known_bad=self.known_bad)
        for reason in sample.bad:
            self.counter.add(reason, sample.where.get(reason, ""))
            self.counter.seen -= 1  # 分母是文本数（建索引时已计），坏图只加分子
        self.counter.check(force=True)
        return sample


@dataclass
class RetrievalSet:
    """图文检索评估集：图像数据集、全部文本、每条文本对应的图像序号（见第 6 章 sec-retrieval）。"""
    images: Dataset                 # 样本为 (image, "", 图像序号)
    captions: list[str]             # Nt 条文本
    text_to_image: torch.Tensor     # LongTensor[Nt]，第 j 条文本的正确图像序号
    image_ids: list[str]            # 原始 image_id，按 images 的顺序
    bad_samples: BadSampleCounter   # 建索引时跳过的坏行


def load_retrieval_set(root: str, split: str = "valid", transform: Optional[Callable] = None,
                       strict: bool = False, max_bad_fraction: float = 0.01) -> RetrievalSet:
    """读 Chinese-CLIP 格式的一个划分作检索评估。

    一条文本若对应多张图，只取第一张作为它的正确答案（retrieval_metrics 每条文本一个目标）。
    """
    imgs_path, texts_path = split_files(root, split)
    counter = BadSampleCounter(max_bad_fraction, min_seen=0)

    def report(bad: BadSample) -> None:
        if strict:
            raise strict_error(bad)
        counter.add(bad.reason, bad.describe())

    tsv = ImageTSV(imgs_path, report)
    texts = read_texts(texts_path, tsv.offsets, report)
    # 只评估被文本引用过的图像，顺序按首次出现，结果可复现
    image_ids = list(dict.fromkeys(ids[0] for _, _, ids in texts))
    position = {i: k for k, i in enumerate(image_ids)}
    counter.add_good(len(texts))
    counter.check(force=True)
    if not texts:
        raise ValueError(f"{texts_path} 里没有可用的文本；坏行统计：{counter.to_dict()}")
    return RetrievalSet(
        images=_ImagesOnly(tsv, image_ids, transform, strict, counter),
        captions=[t for _, t, _ in texts],
        text_to_image=torch.tensor([position[ids[0]] for _, _, ids in texts], dtype=torch.long),
        image_ids=image_ids,
        bad_samples=counter,
    )


__all__ = ["CnClipDataset", "ImageTSV", "RetrievalSet", "load_retrieval_set", "read_texts", "split_files"]

"""稳健解码：坏样本跳过、按原因计数、批大小不变（见第 5 章 sec-code-data-robust）。

真实数据里总有几张坏图、几行坏数据。一个坏样本绝不能让几小时的训练崩溃，
但也不能悄悄吞掉：每跳过一个都按原因计数，写进日志与 ``metrics.json``；
坏样本比例超过 ``max_bad_fraction`` 时停下来，免得在垃圾上训练。

计数怎样从 DataLoader 的 worker 进程回到主进程？worker 与主进程不共享内存，
所以坏样本的记录跟着下一个好样本走（``Sample.bad``），再由 ``collate`` 汇总进批里
（``Batch.bad``、``Batch.seen``），主进程用 ``BadSampleCounter.update(batch)`` 累加。
"""
from __future__ import annotations

import contextlib
import io
import os
import random
import stat
import warnings
from collections import Counter
from typing import Callable, NamedTuple, Optional

import torch
from torch.utils.data import Dataset
from PIL import Image, ImageOps

# 坏样本的原因（计数的键）
REASONS = (
    "missing_file",     # 图像文件不存在或读不出
    "corrupt_image",    # 不是图像、截断、base64 解不开
    "empty_caption",    # 文本为空或只有空白
    "malformed_row",    # TSV/CSV/JSONL 行格式不对（列数、JSON、字段类型）
    "bad_encoding",     # 不是 UTF-8（可用 encoding= 指定其他编码）
    "duplicate_id",     # 图像或文本 id 重复（保留第一个）
    "unknown_image_id", # 文本引用了不存在的图像 id
    "bad_tar_member",   # WebDataset 分片里读不出的条目
    "not_regular_file", # 路径指向目录、FIFO、设备等，不是普通文件（读它可能永远阻塞）
    "too_large",        # 文件超过大小上限
)

# 单张图像文件的大小上限：真实照片远小于它；更大的多半是误指的别的文件，整读进内存得不偿失
MAX_IMAGE_BYTES = 256 * 2**20
# 宽 × 高的上限（约 7300 × 5500，与以文搜图服务相同）：更大的按解压炸弹处理，不解码像素
MAX_IMAGE_PIXELS = 40_000_000


class BadSample(Exception):
    """内部信号：这个样本坏了。``reason`` 是 REASONS 之一，``where`` 说明文件与行。"""

    def __init__(self, reason: str, where: str, detail: str = ""):
        super().__init__(f"{reason}: {where} {detail}".strip())
        self.reason, self.where, self.detail = reason, where, detail

    def describe(self) -> str:
        """出处加原因细节，写进计数器的例子里，报错时用户能看到该怎么改（如 --encoding）。"""
        return f"{self.where}（{self.detail}）" if self.detail else self.where


class BadSampleError(ValueError):
    """对用户抛出的错误：strict 模式下的第一个坏样本，或坏样本比例超限。"""


def strict_error(bad: BadSample) -> BadSampleError:
    """strict=True 时的报错：指明原因、文件与行。"""
    return BadSampleError(
        f"坏样本（{bad.reason}）：{bad.where}；{bad.detail}。"
        "strict 模式在第一个坏样本处停止；去掉 --strict 则跳过并计数 / bad sample in strict mode"
    )


class BadSampleCounter:
    """按原因累计坏样本；``seen`` 是检查过的条目总数（好的加坏的）。

    训练器用 ``for_dataset`` 创建时，``seen`` 先记入建索引时检查过的行数，再累加训练中读取的样本，
    所以它大于 samples_seen；比例 bad/seen 在两种来源上都有意义。
    """

    def __init__(self, max_bad_fraction: float = 0.01, min_seen: int = 100):
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction 应在 [0, 1] 内，实际为 {max_bad_fraction}")
        self.max_bad_fraction = max_bad_fraction
        self.min_seen = min_seen  # 样本太少时比例噪声太大，先不判断
        self.counts: Counter = Counter()
        self.seen = 0
        self.examples: dict[str, str] = {}  # 每种原因记一个例子，方便报错时定位

    @property
    def bad(self) -> int:
        return sum(self.counts.values())

    def add(self, reason: str, where: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        self.seen += n
        self.examples.setdefault(reason, where)

    def add_good(self, n: int = 1) -> None:
        self.seen += n

    def update(self, batch) -> None:
        """累加一个 ``Batch``（collate 的输出）带回的计数与出处。"""
        self.seen += int(getattr(batch, "seen", 0))
        for reason, n in getattr(batch, "bad", {}).items():
            self.counts[reason] += n
        for reason, where in (getattr(batch, "examples", None) or {}).items():
            self.examples.setdefault(reason, where)

    def merge(self, other: "BadSampleCounter") -> None:
        self.seen += other.seen
        self.counts.update(other.counts)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)

    def fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def check(self, force: bool = False) -> None:
        """坏样本比例超限就抛 BadSampleError；样本少于 ``min_seen`` 时不判断（除非 force）。"""
        if self.seen == 0 or (self.seen < self.min_seen and not force):
            return
        if self.fraction() > self.max_bad_fraction:
            detail = "，".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            where = "；".join(f"{k} 例如 {v}" for k, v in sorted(self.examples.items()) if v)
            raise BadSampleError(
                f"坏样本比例 {self.fraction():.1%} 超过上限 {self.max_bad_fraction:.1%}"
                f"（{self.bad}/{self.seen}：{detail}）。{where}。"
                "请先清洗数据，或调大 --max-bad-fraction / too many bad samples"
            )

    @classmethod
    def for_dataset(cls, dataset, max_bad_fraction: float = 0.01, min_seen: int = 100) -> "BadSampleCounter":
        """训练器用：新建计数器，并并入数据集建索引时发现的坏行（``dataset.index_counter``）。"""
        counter = cls(max_bad_fraction, min_seen)
        if getattr(dataset, "index_counter", None) is not None:
            counter.merge(dataset.index_counter)
        return counter

    def to_dict(self) -> dict:
        """写进 log.jsonl 与 metrics.json 的纯 Python 数据。"""
        return {"seen": self.seen, "bad": self.bad, "by_reason": dict(sorted(self.counts.items()))}


# ---------------------------------------------------------------- 图像解码

def to_rgb(img: Image.Image) -> Image.Image:
    """任意模式 → RGB：灰度、调色板、RGBA（贴到白底上）、CMYK、16 位、浮点。"""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16 位/32 位直接 convert("RGB") 会把大于 255 的值截断成全白；先按实际范围缩放到 8 位
        import numpy as np
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # 透明像素的 RGB 值是任意的，贴到白底上才与人眼看到的一致
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")  # L、1、CMYK、YCbCr、LAB、HSV


def open_regular(path: str | os.PathLike, max_bytes: Optional[int] = None):
    """只打开普通文件（跟随符号链接）：目录、FIFO、设备、套接字一律拒绝，读它们可能永远阻塞或读不完。

    用 O_NONBLOCK 打开，所以即使路径是 FIFO 也不会卡在 open 上；返回二进制文件对象。
    失败时抛 OSError（不存在、没权限）或 BadSample（not_regular_file / too_large）。
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadSample("not_regular_file", str(path), "不是普通文件（目录、FIFO 或设备）")
        if max_bytes is not None and st.st_size > max_bytes:
            raise BadSample("too_large", str(path), f"{st.st_size} 字节，超过上限 {max_bytes}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def iter_lines(f, max_bytes: int):
    """逐行读二进制文件，产出 ``(行字节, 字节数)``；超过 ``max_bytes`` 的行产出 ``(None, 字节数)``，
    且不整行读进内存（一个没有换行的巨大文件不会吃光内存）。"""
    while True:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) <= max_bytes or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        n = len(raw)
        while not raw.endswith(b"\n"):
            raw = f.readline(1 << 20)
            if not raw:
                break
            n += len(raw)
        yield None, n


def read_file_bytes(path: str | os.PathLike, where: str = "", max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """读出一个普通文件的全部字节；任何问题都变成 BadSample，从不阻塞、从不读无限长的设备。"""
    where = where or str(path)
    try:
        with open_regular(path, max_bytes) as f:
            return f.read(max_bytes + 1)
    except BadSample as e:
        raise BadSample(e.reason, where, e.detail) from None
    except OSError as e:
        raise BadSample("missing_file", where, f"{type(e).__name__}: {e}") from None


@contextlib.contextmanager
def no_bomb_warning():
    """PIL 对大图的 DecompressionBombWarning 静音：尺寸由调用方自己查（MAX_IMAGE_PIXELS）。"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def decode_image(data: bytes | str | os.PathLike, where: str = "") -> Image.Image:
    """读图并转成 RGB；失败时抛 BadSample（missing_file / corrupt_image 等），从不抛别的。"""
    where = where or str(data if not isinstance(data, bytes) else "<bytes>")
    if isinstance(data, (bytes, bytearray)):
        fp = io.BytesIO(data)
    else:
        fp = io.BytesIO(read_file_bytes(data, where))
    try:
        # 截断的文件要到真正解码像素时才报错；load() 放在这里，让错误发生在 try 之内
        with no_bomb_warning(), Image.open(fp) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:  # 先看尺寸：几百 KB 的 PNG 能解出几 GB 像素
                raise BadSample("too_large", where, f"{img.width}×{img.height} 像素，超过上限 {MAX_IMAGE_PIXELS}")
            img.load()
            img = ImageOps.exif_transpose(img)  # 手机拍的照片靠 EXIF 方向标记“站直”
            return to_rgb(img)
    except BadSample:
        raise
    except Exception as e:  # noqa: BLE001  PIL 对畸形文件可能抛任何异常（struct.error、IndexError…）
        raise BadSample("corrupt_image", where, f"{type(e).__name__}: {e}") from None


def clean_caption(text, where: str = "") -> str:
    """去掉首尾空白；空文本或非字符串抛 BadSample。"""
    if not isinstance(text, str):
        raise BadSample("malformed_row", where, f"文本应为字符串，实际为 {type(text).__name__}")
    text = " ".join(text.split())  # 换行、制表符、连续空格都压成一个空格
    if not text:
        raise BadSample("empty_caption", where, "文本为空或只有空白")
    return text


def decode_line(raw: bytes, encoding: str, where: str) -> str:
    """按行解码；解不开时抛 BadSample("bad_encoding")。"""
    try:
        return raw.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise BadSample("bad_encoding", where,
                        f"不是 {encoding} 编码（{e.reason}）；若文件是 GBK，请加 --encoding gb18030（API：encoding=） / bad encoding") from None


# ---------------------------------------------------------------- 样本、批与替换

class Sample(tuple):
    """``(image, caption, label)``，外加 ``bad``：在它之前被跳过的坏样本原因列表，
    ``where``：原因 → 一个出处（文件、行或分片），报错时用来指明是哪里坏了。"""

    def __new__(cls, image, caption, label, bad=(), where=None):
        obj = super().__new__(cls, (image, caption, label))
        obj.bad = list(bad)
        obj.where = dict(where or {})
        return obj

    def __reduce__(self):  # 让 worker 进程 pickle 时带上 bad 与 where
        return (Sample, (self[0], self[1], self[2], self.bad, self.where))


class Batch(NamedTuple):
    """collate 的输出：``images, captions, labels = batch[:3]``；``bad`` 与 ``seen`` 是坏样本计数。"""
    images: torch.Tensor      # (B, 3, H, W)
    captions: list            # B 条文本
    labels: torch.Tensor      # (B,)，没有类别时为 -1
    bad: dict                 # 原因 -> 本批跳过的个数
    seen: int                 # 本批尝试读取的样本数 = B + 跳过数
    examples: dict = {}       # 原因 -> 一个出处（文件、行或分片）


def collate(batch: list) -> Batch:
    """把样本列表叠成 Batch，并汇总各样本带来的坏样本记录。"""
    if not batch:
        raise ValueError("collate 收到空列表 / empty batch")
    bad: Counter = Counter()
    examples: dict = {}
    for s in batch:
        bad.update(getattr(s, "bad", ()))
        for reason, where in getattr(s, "where", {}).items():
            examples.setdefault(reason, where)
    images = torch.stack([s[0] for s in batch])
    labels = torch.as_tensor([int(s[2]) for s in batch], dtype=torch.long)
    return Batch(images, [s[1] for s in batch], labels, dict(bad), len(batch) + sum(bad.values()), examples)


def load_with_substitutes(
    n: int, index: int, load: Callable[[int], tuple], strict: bool,
    max_tries: int = 64, known_bad: Optional[set] = None,
) -> Sample:
    """读第 ``index`` 个样本；坏了就换一个随机的好样本，保持批大小不变。

    只记第 ``index`` 个自己的坏原因：每个下标每轮只被要求一次，
    所以每个坏样本每轮恰好计一次；试替补时碰到的坏样本不计
    （轮到它自己时才计），只记进 ``known_bad``，以后不再选它。
    替补按 (index, 第几次) 确定性地随机抽取，
    所以一整块连续的坏行也不会耗尽尝试次数；
    只有坏样本占了绝大多数时，才会连续 ``max_tries`` 次抽不到好样本而报错。
    strict 时第一个坏样本就报错。
    """
    if not 0 <= index < n:
        raise IndexError(f"下标 {index} 超出范围 [0, {n})")
    known_bad = set() if known_bad is None else known_bad
    try:
        image, caption, label = load(index)
        return Sample(image, caption, label)
    except BadSample as e:
        if strict:
            raise strict_error(e) from None
        known_bad.add(index)
        first = e
    rng = random.Random(index * 1_000_003 + n)
    for _ in range(max_tries):
        if len(known_bad) >= n:
            break
        j = rng.randrange(n)
        if j in known_bad:
            continue
        try:
            image, caption, label = load(j)
            examples = {first.reason: first.describe()}
            return Sample(image, caption, label, [first.reason], examples)
        except BadSample:
            known_bad.add(j)
    raise BadSampleError(
        f"第 {index} 个样本是坏的（{first}），"
        f"随机试了 {max_tries} 个替补也都是坏样本"
        f"（已知坏样本 {len(known_bad)}/{n} 个）；"
        f"数据几乎全坏，请检查数据 / too many bad samples"
    )


class RobustDataset(Dataset):
    """map 式真实数据集的基类：子类实现 ``__len__`` 与 ``load(i)``（坏样本抛 BadSample）。

    ``index_counter`` 记录建索引时发现的坏行；``index_problem`` 在 strict 时直接报错。
    """

    def __init__(self, strict: bool = False, max_bad_fraction: float = 0.01):
        self.strict = strict
        self.index_counter = BadSampleCounter(max_bad_fraction, min_seen=0)
        # 本进程读样本时发现的坏样本（评估在主进程里读，用它报告；训练另由 Batch 把计数带回）
        self.load_counter = BadSampleCounter(max_bad_fraction)
        self.known_bad: set = set()

    def index_problem(self, bad: BadSample) -> None:
        if self.strict:
            raise strict_error(bad)
        self.index_counter.add(bad.reason, bad.describe())

    def finish_index(self, n_good: int) -> None:
        """建完索引：记下好行数，坏行比例超限就报错，一个好样本都没有也报错。"""
        self.index_counter.add_good(n_good)
        self.index_counter.check(force=True)
        if n_good == 0:
            raise BadSampleError(f"{type(self).__name__} 里没有一个可用的样本；"
                                 f"坏行统计：{self.index_counter.to_dict()}")

    def load(self, i: int) -> tuple:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        sample = load_with_substitutes(len(self), index, self.load, self.strict, known_bad=self.known_bad)
        self.load_counter.add_good(1)
        for reason in sample.bad:
            self.load_counter.add(reason, sample.where.get(reason, ""))
        self.load_counter.check()
        return sample

    def bad_samples(self) -> BadSampleCounter:
        """建索引与本进程读取时发现的全部坏样本（评估报告用）。"""
        total = BadSampleCounter(self.index_counter.max_bad_fraction, min_seen=0)
        total.merge(self.index_counter)
        total.merge(self.load_counter)
        # 分母是建索引时检查过的行数；读取时才发现坏的样本都在这些行里，不能再算一遍
        total.seen = max(self.index_counter.seen, self.load_counter.seen)
        return total


__all__ = [
    "RobustDataset", "MAX_IMAGE_BYTES", "iter_lines", "open_regular", "read_file_bytes", "no_bomb_warning",
    "REASONS", "BadSample", "BadSampleError", "BadSampleCounter", "to_rgb", "decode_image",
    "clean_caption", "decode_line", "Sample", "Batch", "collate", "load_with_substitutes", "strict_error",
]

"""安全解码与 CLIP 预处理，只用 PIL 与 numpy（见第 6 章 sec-service）。

建索引与服务端共用这一份代码，所以“索引里的向量”和“上传图片的向量”经过完全相同的预处理。
它与 ``clipedu.data.eval_transform`` 逐像素一致（短边双三次缩放、中心裁剪、CLIP 均值方差），
测试里对两者做了比较；不用 torchvision，是为了让 ONNX 后端在查询时完全不需要 torch。
"""
from __future__ import annotations

import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# 只让 PIL 尝试这些解码器：少一种格式，少一份被畸形文件攻击的代码
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
# 坏文件的原因（计数的键），与 clipedu.data.robust 一样按原因计数而不是悄悄吞掉
REASONS = (
    "not_image",    # 不是图像（或不是允许的格式）
    "truncated",    # 是图像但解码失败：截断、数据损坏
    "too_large",    # 文件过大、像素过多或解压炸弹（decompression bomb）
    "unreadable",   # 读不出文件：权限、I/O 错误、读取时已被删除
)
DEFAULT_MAX_BYTES = 50 * 2**20       # 单个文件的大小上限
DEFAULT_MAX_PIXELS = 40_000_000      # 宽 × 高的上限（约 7300 × 5500），超过按解压炸弹处理

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), dtype=np.float32)
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711), dtype=np.float32)


class BadImage(ValueError):
    """一张坏图：``reason`` 是 REASONS 之一。"""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """读出整个文件；过大或读不出时抛 BadImage。"""
    try:
        # O_NONBLOCK：扫描之后被换成 FIFO 的文件也不会让 open 卡住；fstat 看的是真正打开的那个文件
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BadImage("unreadable", "不是普通文件（目录、FIFO 或设备）")
            if st.st_size > max_bytes:
                raise BadImage("too_large", f"文件 {st.st_size} 字节，超过上限 {max_bytes}")
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read(max_bytes + 1)
        finally:
            os.close(fd)
    except BadImage:
        raise
    except OSError as e:
        raise BadImage("unreadable", f"{type(e).__name__}: {e}") from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """字节 → RGB 的 PIL 图像；先看尺寸再解码像素，所以解压炸弹不会先把内存吃光。"""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            w, h = im.size
            if w * h > max_pixels:
                raise BadImage("too_large", f"{w}×{h} 像素，超过上限 {max_pixels}")
            im.load()
            return im.convert("RGB")
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_large", str(e)[:120]) from None
    except UnidentifiedImageError:
        raise BadImage("not_image", "无法识别的图像格式") from None
    except Exception as e:  # noqa: BLE001  截断与损坏的文件从各个解码器抛出各种异常
        raise BadImage("truncated", f"{type(e).__name__}: {str(e)[:120]}") from None


def preprocess(im: Image.Image, image_size: int) -> np.ndarray:
    """PIL RGB 图像 → float32 [3, S, S]：短边双三次缩放到 S、中心裁剪、CLIP 归一化。

    每一步都照搬 torchvision 的 Resize(S) + CenterCrop(S) 在 PIL 图像上的取整方式。
    """
    w, h = im.size
    if w <= h:
        new_w, new_h = image_size, int(image_size * h / w)
    else:
        new_w, new_h = int(image_size * w / h), image_size
    im = im.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - image_size) / 2.0)), int(round((new_w - image_size) / 2.0))
    im = im.crop((left, top, left + image_size, top + image_size))
    x = np.asarray(im, dtype=np.float32) / np.float32(255.0)   # (S, S, 3)
    x = (x - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))            # (3, S, S)


def load_image_file(path, image_size: int, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """读文件、安全解码、预处理；任何问题都抛带原因的 BadImage。"""
    return preprocess(decode_image(read_file(path, max_bytes), max_pixels), image_size)

"""CSV/TSV 图文对数据集，格式与 open_clip 相同（见第 5 章 sec-code-data-real）。

一列图像路径、一列文本；分隔符按扩展名取（.csv → 逗号，.tsv → 制表符），可覆盖；
列名可配置（默认 ``filepath``、``title``，与 open_clip 的 --csv-img-key/--csv-caption-key 相同）。
相对路径相对于 CSV 文件所在目录。第一行是表头。

建索引时逐行解码，坏行（列数不对、不是 UTF-8、空文本）跳过并计数；
图像在 ``__getitem__`` 里才读，读不出的按 robust.py 的规则替换并计数。
"""
from __future__ import annotations

import csv as _csv
import os
from typing import Callable, Optional

from ..outdir import require_regular_file
from .robust import BadSample, RobustDataset, clean_caption, decode_image, decode_line, iter_lines, open_regular

MAX_ROW_BYTES = 2**20  # 一行（图像路径 + 文本）的上限；更长的多半是误指的二进制文件


def separator_for(path: str, sep: Optional[str] = None) -> str:
    """扩展名决定分隔符：.tsv → 制表符，其余（.csv）→ 逗号；``sep`` 显式给出时优先。"""
    if sep is not None:
        from ..config import check_separator
        return check_separator(sep)
    return "\t" if path.lower().endswith((".tsv", ".tsv.txt")) else ","


def read_rows(path: str, sep: str, encoding: str = "utf-8"):
    """逐行读表格，产出 ``(行号, 字段列表)``；解码失败的行产出 ``(行号, BadSample)``。

    行号从 1 开始，第 1 行是表头——与文本编辑器里看到的一致，报错时好定位。
    不支持带引号的跨行字段（open_clip 的数据也不用）。
    """
    require_regular_file(path, "表格文件", "--data-path/--csv")
    with open_regular(path) as f:
        for lineno, (raw, size) in enumerate(iter_lines(f, MAX_ROW_BYTES), start=1):
            where = f"{path} 第 {lineno} 行"
            if raw is None:
                yield lineno, BadSample("malformed_row", where, f"一行有 {size} 字节，超过上限 {MAX_ROW_BYTES}")
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # Excel 导出的 UTF-8 带 BOM
            try:
                line = decode_line(raw, encoding, where)
            except BadSample as e:
                yield lineno, e
                continue
            if not line.strip():
                continue  # 空行（常见于文件末尾）不算坏样本
            yield lineno, next(_csv.reader([line], delimiter=sep))


class CsvDataset(RobustDataset):
    """open_clip 格式的 CSV/TSV 数据集；样本为 ``(image, caption, -1)``。"""

    def __init__(self, path: str, transform: Optional[Callable] = None, img_key: str = "filepath",
                 caption_key: str = "title", sep: Optional[str] = None, encoding: str = "utf-8",
                 strict: bool = False, max_bad_fraction: float = 0.01):
        super().__init__(strict, max_bad_fraction)
        self.path = os.path.abspath(os.path.expanduser(path))
        self.root = os.path.dirname(self.path)
        self.transform = transform
        self.sep = separator_for(self.path, sep)
        self.items: list[tuple[str, str, int]] = []  # (图像路径, 文本, 行号)
        self._build_index(img_key, caption_key, encoding)

    def _header(self, rows, img_key: str, caption_key: str) -> tuple[int, int]:
        for lineno, fields in rows:
            if isinstance(fields, BadSample):
                raise ValueError(f"{self.path} 的表头无法解码：{fields.detail} / cannot decode header")
            missing = [k for k in (img_key, caption_key) if k not in fields]
            if missing:
                sep_name = "制表符" if self.sep == "\t" else repr(self.sep)
                raise ValueError(
                    f"{self.path} 的表头缺少列 {missing}；表头为 {fields}（按分隔符 {sep_name} 切分）。"
                    "请用 --csv-img-key/--csv-caption-key 指定列名（API：img_key/caption_key），"
                    "或用 --csv-separator 指定分隔符（API：sep） / missing columns"
                )
            return fields.index(img_key), fields.index(caption_key)
        raise ValueError(f"{self.path} 是空文件；第一行应为表头，如 'filepath{self.sep}title'")

    def _build_index(self, img_key: str, caption_key: str, encoding: str) -> None:
        rows = read_rows(self.path, self.sep, encoding)
        i_img, i_cap = self._header(rows, img_key, caption_key)
        width = max(i_img, i_cap) + 1
        for lineno, fields in rows:
            where = f"{self.path} 第 {lineno} 行"
            try:
                if isinstance(fields, BadSample):
                    raise fields
                if len(fields) < width or not fields[i_img].strip():
                    raise BadSample("malformed_row", where, f"字段不足或图像路径为空：{fields!r}")
                caption = clean_caption(fields[i_cap], where)
            except BadSample as e:
                self.index_problem(e)
                continue
            image_path = os.path.join(self.root, os.path.expanduser(fields[i_img].strip()))
            self.items.append((image_path, caption, lineno))
        self.finish_index(len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple:
        image_path, caption, lineno = self.items[i]
        image = decode_image(image_path, f"{self.path} 第 {lineno} 行，图像 {image_path}")
        if self.transform is not None:
            image = self.transform(image)
        return image, caption, -1


__all__ = ["CsvDataset", "read_rows", "separator_for"]

"""``python -m clipedu data shard``：把 CSV + 图像文件夹打包成 WebDataset tar 分片（见第 5 章 sec-code-data-real）。

每个样本在 tar 里是同名的两个文件：``000000042.jpg``（原始字节，不重新编码；扩展名按图像的真实格式取）
与 ``000000042.txt``（UTF-8 文本）。
打包前先解码验证每张图，坏图与坏行跳过并计数，所以分片里只有能用的样本。
"""
from __future__ import annotations

import argparse
import glob
import json
import os

from .. import argtypes
from ..config import check_encoding
from ..errors import UsageError
from ..outdir import OutDirLock

from .csv import CsvDataset
from .robust import BadSample, BadSampleCounter, decode_image, no_bomb_warning, read_file_bytes, strict_error

SHARD_GLOB = "shard-*.tar"


def image_member(data: bytes, where: str, verify: bool) -> tuple[str, bytes]:
    """一张图在分片里的 ``(扩展名, 字节)``：扩展名取自图像的真实格式，而不是原文件名。

    原文件名可能是 ``.jfif``、``.txt`` 或没有扩展名：照搬会让读取端认不出图像，``.txt`` 还会和文本撞键。
    读取端认识的格式（JPEG、PNG、WebP、BMP、TIFF、GIF、PPM）原样写入；其余 PIL 能解码的格式无损转成 PNG。
    """
    import io

    from PIL import Image
    from .wds import FORMAT_EXT

    try:
        with no_bomb_warning(), Image.open(io.BytesIO(data)) as img:  # 只读文件头，很快；尺寸由 decode_image 查
            fmt = img.format
    except Exception as e:  # noqa: BLE001  PIL 对畸形文件可能抛任何异常
        raise BadSample("corrupt_image", where, f"{type(e).__name__}: {e}") from None
    if fmt in FORMAT_EXT:
        if verify:
            decode_image(data, where)  # 只为验证；写入的仍是原始字节
        return FORMAT_EXT[fmt], data
    buf = io.BytesIO()
    decode_image(data, where).save(buf, format="PNG")
    return "png", buf.getvalue()


def _prepare_out(out_dir: str, overwrite: bool) -> None:
    """输出目录里已有分片时拒绝（新旧分片混在一起，旧的多出来的分片会被当成新数据读），除非 --overwrite。"""
    from ..outdir import ensure_dir

    ensure_dir(out_dir)
    old = sorted(glob.glob(os.path.join(out_dir, SHARD_GLOB)))
    if old and not overwrite:
        raise UsageError(f"--out {out_dir} 里已有 {len(old)} 个分片（{os.path.basename(old[0])} …）；"
                         "换一个空目录，或加 --overwrite 删除旧分片后重写 / output directory not empty")
    for p in old:
        os.unlink(p)


def write_shards(csv_path: str, out_dir: str, shard_size: int = 10000, img_key: str = "filepath",
                 caption_key: str = "title", sep: str | None = None, encoding: str = "utf-8",
                 strict: bool = False, max_bad_fraction: float = 0.01, verify: bool = True,
                 overwrite: bool = False) -> dict:
    """写分片，返回摘要 ``{"written", "shards", "pattern", "bad_samples"}``。"""
    import webdataset as wds  # 只有打包时才需要；CLI 启动不因此变慢

    if not isinstance(shard_size, int) or shard_size < 1:
        raise UsageError(f"--shard-size 应为正整数，实际为 {shard_size!r} / invalid --shard-size")
    check_encoding(encoding)
    table = CsvDataset(csv_path, img_key=img_key, caption_key=caption_key, sep=sep, encoding=encoding,
                       strict=strict, max_bad_fraction=max_bad_fraction)
    # 分母是表格里检查过的行数（建索引时已计入）；读图时才发现的坏图只加分子，每行只计一次
    counter = BadSampleCounter.for_dataset(table, max_bad_fraction, min_seen=0)
    with OutDirLock(out_dir, enabled=True):  # 两个 data shard 写同一个目录会把分片混在一起
        _prepare_out(out_dir, overwrite)
        # 绝对路径：webdataset 把以 “pipe:” 开头的名字当成 shell 命令执行，目录名不能被这样解释
        pattern = os.path.join(os.path.abspath(out_dir), "shard-%06d.tar")
        written = 0
        with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
            for image_path, caption, lineno in table.items:
                where = f"{table.path} 第 {lineno} 行，图像 {image_path}"
                try:
                    ext, data = image_member(read_file_bytes(image_path, where), where, verify)
                except BadSample as e:
                    if strict:
                        raise strict_error(e) from None
                    counter.add(e.reason, e.describe())
                    counter.seen -= 1
                    continue
                sink.write({"__key__": f"{written:09d}", ext: data, "txt": caption.encode("utf-8")})
                written += 1
            n_shards = sink.shard if written else 0
    counter.check(force=True)
    last = max(n_shards - 1, 0)
    return {"written": written, "shards": n_shards,
            "pattern": os.path.join(out_dir, f"shard-{{000000..{last:06d}}}.tar"),
            "bad_samples": counter.to_dict()}


def run_shard(args: argparse.Namespace) -> int:
    """命令行入口：打印 JSON 摘要，返回退出码。"""
    summary = write_shards(args.csv, args.out, args.shard_size, img_key=args.csv_img_key,
                           caption_key=args.csv_caption_key, sep=args.csv_separator, encoding=args.encoding,
                           strict=args.strict, max_bad_fraction=args.max_bad_fraction, verify=not args.no_verify,
                           overwrite=args.overwrite)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    print(f"训练时用：python -m clipedu train --dataset wds --data-path '{summary['pattern']}'")
    return 0


def add_shard_parser(subparsers) -> argparse.ArgumentParser:
    """在 ``data`` 子命令的 subparsers 上注册 ``shard``（``args.func`` 为 run_shard）。"""
    p = subparsers.add_parser("shard", help="CSV + 图像文件夹 → WebDataset tar 分片")
    p.add_argument("--csv", required=True, help="open_clip 格式的 CSV/TSV 文件（图像路径相对于它所在目录）")
    p.add_argument("--out", required=True, help="输出目录，写 shard-000000.tar …")
    p.add_argument("--shard-size", type=argtypes.int_in(1, 10**7), default=10000, help="每个分片的样本数")
    p.add_argument("--csv-img-key", default="filepath", help="图像路径列名")
    p.add_argument("--csv-caption-key", default="title", help="文本列名")
    p.add_argument("--csv-separator", type=argtypes.separator, default=None,
                   help="分隔符；默认按扩展名（.csv 逗号，.tsv 制表符）")
    p.add_argument("--encoding", type=argtypes.encoding, default="utf-8", help="CSV 编码，如 gb18030")
    p.add_argument("--strict", action="store_true", help="遇到第一个坏样本即报错")
    p.add_argument("--max-bad-fraction", type=argtypes.fraction, default=0.01, help="坏样本比例上限")
    p.add_argument("--overwrite", action="store_true", help="--out 里已有分片时删除它们再写（默认拒绝）")
    p.add_argument("--no-verify", action="store_true", help="不解码验证图像（更快，坏图留到训练时跳过）")
    p.set_defaults(func=run_shard)
    return p


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """在顶层 subparsers 上注册 ``data``，其下有 ``shard``。"""
    data = subparsers.add_parser("data", help="数据工具：打包分片等")
    add_shard_parser(data.add_subparsers(dest="data_command", required=True, metavar="shard"))
    return data


__all__ = ["add_data_parser", "add_shard_parser", "run_shard", "write_shards"]

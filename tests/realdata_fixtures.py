"""test_data_real.py 用的小文件工厂：每种坏输入都在 tmp_path 里现做。"""
from __future__ import annotations

import base64
import io
import json
import os
import pickle

import numpy as np
from PIL import Image

COLORS = {"红": (255, 0, 0), "绿": (0, 255, 0), "蓝": (0, 0, 255), "黄": (255, 255, 0), "白": (255, 255, 255)}


def png_bytes(color=(255, 0, 0), size=(12, 12), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(color=(255, 0, 0), size=(12, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def exif_rotated_jpeg(size=(20, 10)) -> bytes:
    """宽 20、高 10 的 JPEG，EXIF 方向 6（需顺时针转 90°）：正确解码后应为宽 10、高 20。"""
    img = Image.new("RGB", size, (0, 128, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def odd_mode_images() -> dict:
    """各种非 RGB 模式的图像文件字节：灰度、灰度+透明、调色板、带透明的调色板、RGBA、CMYK、16 位、1 位。"""
    out = {}
    for name, img, fmt in [
        ("L", Image.new("L", (8, 8), 128), "PNG"),
        ("LA", Image.new("LA", (8, 8), (128, 0)), "PNG"),
        ("P", Image.new("RGB", (8, 8), (255, 0, 0)).convert("P"), "PNG"),
        ("RGBA", Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"),  # 全透明的黑 → 应贴成白
        ("CMYK", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
        ("I;16", Image.fromarray(np.linspace(0, 60000, 64).reshape(8, 8).astype(np.uint16)), "PNG"),
        ("1", Image.new("1", (8, 8), 1), "PNG"),
    ]:
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[name] = buf.getvalue()
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    out["P+transparency"] = buf.getvalue()
    return out


def write_csv_folder(root, rows, name="data.csv", header="filepath,title", encoding="utf-8"):
    """rows 里的每一项：(图像文件名, 文本, 图像字节或 None)；字节为 None 则不写文件（缺图）。"""
    os.makedirs(root / "imgs", exist_ok=True)
    sep = "\t" if name.endswith(".tsv") else ","
    lines = [header]
    for fname, caption, data in rows:
        if data is not None:
            (root / "imgs" / fname).write_bytes(data)
        lines.append(f"imgs/{fname}{sep}{caption}")
    path = root / name
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def write_cnclip(root, split, images: dict, texts: list, extra_img_lines=(), extra_text_lines=()):
    """images: {image_id: 字节}；texts: [dict]；extra_*: 原样追加的坏行（bytes）。"""
    os.makedirs(root, exist_ok=True)
    with open(root / f"{split}_imgs.tsv", "wb") as f:
        for image_id, data in images.items():
            f.write(f"{image_id}\t".encode() + base64.b64encode(data) + b"\n")
        for line in extra_img_lines:
            f.write(line + b"\n")
    with open(root / f"{split}_texts.jsonl", "wb") as f:
        for obj in texts:
            f.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
        for line in extra_text_lines:
            f.write(line + b"\n")


def write_fake_cifar(root, n_classes=10, n_per_file=6):
    """torchvision 的 pickle 布局的小号 CIFAR：图像是纯色，标签 = 下标 % 类别数。"""
    if n_classes == 10:
        folder, files, meta_name, label_key, names_key = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "batches.meta", "labels", "label_names")
    else:
        folder, files, meta_name, label_key, names_key = (
            "cifar-100-python", ["train", "test"], "meta", "fine_labels", "fine_label_names")
    d = root / folder
    os.makedirs(d, exist_ok=True)
    for fname in files:
        labels = [i % n_classes for i in range(n_per_file)]
        data = np.stack([np.full((3, 32, 32), 20 * (i % 10), np.uint8).reshape(-1) for i in range(n_per_file)])
        with open(d / fname, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
    with open(d / meta_name, "wb") as f:
        pickle.dump({names_key: [f"class{i}" for i in range(n_classes)]}, f)
    return root

"""把图像编码器与文本编码器导出为 ONNX（动态批大小），并当场核对 onnxruntime 与 PyTorch 的输出（见第 6 章 sec-service）。

输出目录::

    image.onnx          images float32 [B, 3, S, S] → features float32 [B, D]（已 L2 归一化）
    text.onnx           tokens int64 [B, L]          → features float32 [B, D]（已 L2 归一化）
    clipedu-onnx.json   图像边长、嵌入维度、逆温度 1/τ、分词器状态、源检查点的 SHA-256

文本输入固定为上下文长度 L（分词器总是补齐到 L），只有批大小是动态的。
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from .encoders import ONNX_META, load_torch_encoder

OPSET = 17


def _wrappers(model):
    import torch

    class ImageEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model.encode_image(images)

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return self.model.encode_text(tokens)

    return ImageEncoder().eval(), TextEncoder().eval()


def _example_tokens(encoder, batch: int):
    import torch

    tokens = encoder.tokenizer(["红色的圆形", "一只猫", "a photo of a dog", "蓝色的正方形"][:batch])
    return tokens if isinstance(tokens, torch.Tensor) else torch.as_tensor(tokens)


def check_export_target(out: Path, fingerprint: str, overwrite: bool) -> None:
    """out 里已有另一个模型的完整导出时拒绝（除非 overwrite）：别让一次导出悄悄换掉服务正在用的模型。

    同一个检查点（SHA-256 相同）重新导出、写到一半的导出（没有元数据文件）都直接覆盖。"""
    from ..errors import UsageError

    meta_path = out / ONNX_META
    if overwrite or not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        old, source = meta["source_sha256"], meta.get("source_checkpoint", "?")
    except (OSError, ValueError, KeyError, TypeError):
        old, source = None, "无法读取的元数据"
    if old != fingerprint:
        raise UsageError(
            f"{out} 里已有另一个模型的 ONNX 导出（来自 {source}，SHA-256 "
            f"{(old or '?')[:12]}…，现在的检查点是 {fingerprint[:12]}…）；请换一个 --out，"
            f"或加 --overwrite 覆盖它 / export of another model exists")


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, check: bool = True, log=print,
                overwrite: bool = False) -> dict:
    """导出两个编码器；check=True 时用随机批（批大小 1 与 3）核对 onnxruntime 与 PyTorch，返回最大误差。

    out 里已有别的检查点的导出时拒绝，除非 overwrite=True（见 ``check_export_target``）。"""
    import torch

    from ..outdir import ensure_dir

    encoder = load_torch_encoder(checkpoint)
    out = ensure_dir(out)
    check_export_target(out, encoder.fingerprint, overwrite)
    model = encoder.model.float().eval()
    (out / ONNX_META).unlink(missing_ok=True)  # 写到一半被杀时，目录不会被当成完整的导出
    image_enc, text_enc = _wrappers(model)
    S = encoder.image_size
    images = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(0))
    tokens = _example_tokens(encoder, 2)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # 旧版导出器的弃用提示与 TracerWarning 对这两个固定结构的函数无关
        torch.onnx.export(image_enc, (images,), str(out / "image.onnx"), input_names=["images"],
                          output_names=["features"], dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
        torch.onnx.export(text_enc, (tokens,), str(out / "text.onnx"), input_names=["tokens"],
                          output_names=["features"], dynamic_axes={"tokens": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    meta = {
        "format": "clipedu-onnx", "version": 1, "image_model": "image.onnx", "text_model": "text.onnx",
        "image_size": S, "embed_dim": encoder.embed_dim, "context_length": int(tokens.shape[1]),
        "inv_temperature": encoder.inv_temperature, "tokenizer": encoder.tokenizer_state(),
        "source_checkpoint": Path(checkpoint).name, "source_sha256": encoder.fingerprint, "opset": OPSET,
    }
    tmp = out / f".{ONNX_META}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out / ONNX_META)  # 最后原子地写：有它才是完整的导出
    result = {"out": str(out), "image_mb": round((out / "image.onnx").stat().st_size / 2**20, 2),
              "text_mb": round((out / "text.onnx").stat().st_size / 2**20, 2)}
    if check:
        result.update(compare_with_torch(encoder, out))
        log(f"onnxruntime 与 PyTorch 的最大绝对误差：图像 {result['image_max_abs_diff']:.2e}，"
            f"文本 {result['text_max_abs_diff']:.2e}")
    return result


def compare_with_torch(encoder, out: Path, batches=(1, 3)) -> dict:
    """同一批输入分别过 PyTorch 与 onnxruntime，返回两个编码器的最大绝对误差（跨所有批大小）。"""
    from .encoders import OnnxEncoder

    onnx = OnnxEncoder(out)
    rng = np.random.default_rng(0)
    texts = ["红色的圆形", "一个蓝色的小正方形，在左上方", "猫", "a photo of a cat"]
    img_diff = txt_diff = 0.0
    for B in batches:
        images = rng.standard_normal((B, 3, encoder.image_size, encoder.image_size)).astype(np.float32)
        img_diff = max(img_diff, float(np.abs(onnx.encode_images(images) - encoder.encode_images(images)).max()))
        batch = [texts[i % len(texts)] for i in range(B)]
        txt_diff = max(txt_diff, float(np.abs(onnx.encode_texts(batch) - encoder.encode_texts(batch)).max()))
    return {"image_max_abs_diff": img_diff, "text_max_abs_diff": txt_diff}

"""认出 clipedu 自己写的权重文件，免得把它当成 OpenAI 权重去“推断”结构（见第 5 章 sec-code-pretrained）。

``load_pretrained`` 按 OpenAI 的约定从张量形状推断结构（头数 = 宽度 // 64、EOS = 词表最后一个 id、QuickGELU），
这对 clipedu 训练的小模型是错的：tiny-cpu 的头数、中文词表的 EOS id、GELU 都不同。
clipedu 的检查点（``.pt``）与导出的 ``.safetensors`` 都带着模型配置，照它建模型才对。
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

FORMAT = "clipedu-checkpoint"


def file_sha256(path: str | os.PathLike) -> str:
    """文件内容的 SHA-256（十六进制），按 1 MiB 一块读：模型指纹、索引与模型缓存的校验共用。"""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stored_config(path: str):
    """clipedu 写的文件 → 其中保存的 ``CLIPConfig``；别的文件（OpenAI、open_clip）→ None。"""
    from .config import config_from_file

    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        from .errors import CorruptFileError
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # noqa: BLE001  SafetensorError：文件头坏了或被截断
            raise CorruptFileError(f"{path} 不是有效的 safetensors 文件（{type(e).__name__}: {str(e)[:100]}）"
                                   " / invalid safetensors file") from None
        if meta.get("format") == FORMAT and "config" in meta:
            try:
                config = json.loads(meta["config"])
            except (ValueError, RecursionError):
                config = None  # 交给 config_from_file 报告
            return config_from_file(config, path)
        return None
    from .pretrained import is_torchscript
    if is_torchscript(path):
        return None
    from .checkpoint import load_checkpoint
    ckpt = load_checkpoint(Path(path))
    if ckpt.get("format") == FORMAT and isinstance(ckpt.get("config"), dict):
        return config_from_file(ckpt["config"], path)
    return None


def looks_like_clipedu(sd: dict) -> bool:
    """没有配置的 state dict 是否像 clipedu 训练的（中文内置词表）：推断的 EOS、头数都会错。"""
    from .tokenizer import VOCAB_SIZE

    emb = sd.get("token_embedding.weight")
    return emb is not None and emb.shape[0] == VOCAB_SIZE


def refuse_unconfigured(path: str) -> ValueError:
    return ValueError(
        f"{path} 像是 clipedu 训练的权重（中文词表），但文件里没有模型配置，按 OpenAI 约定推断的结构"
        "（头数、EOS id、激活函数）会与训练时不同。请用 clipedu.load_model 读 clipedu 检查点（.pt） "
        "/ clipedu weights without a stored config")


def build_from_config(config, sd: dict, path: str):
    """按保存的配置建 CLIP 并严格载入权重（键、形状不一致时列出差异）。"""
    from .checkpoint import build_model_checked

    return build_model_checked(config, sd)


__all__ = ["stored_config", "looks_like_clipedu", "refuse_unconfigured", "build_from_config"]

"""读 Chinese-CLIP 的检查点：任何一种保存方式、从张量形状推断整个结构。

见第 6 章 sec-cnclip。

Chinese-CLIP（``pip install cn_clip``）的权重文件有这几种样子，这里都认：

- 训练检查点 ``{"epoch", "step", "name", "state_dict": {"module.<键>": 张量}, …}``
  （发布的 ``clip_cn_*.pt`` 就是它）；
- 裸 state dict，键带或不带 ``module.`` 前缀；
- ``.safetensors``；
- 打开 ``--use-flash-attention`` 训练时存下的键名（``attn.Wqkv``、
  ``attention.self.Wqkv``），先换回标准键名。

一律只用 ``torch.load(..., weights_only=True)`` 或 safetensors 读，文件里的任何代码
都不会执行。结构推断：有 ``visual.proj`` 是 ViT，有 ``visual.attnpool`` 是
ModifiedResNet；宽度、层数、图块、分辨率、文本层数与宽度都来自张量形状；头数照惯例取
宽度 / 64（只有 ViT-H/14 的图像塔是 宽度 / 80，见下）。
"""
from __future__ import annotations

import math
import os
import pickle

import torch
from torchvision import transforms as T

from .checkpoint import check_zip_crc
from .config import CLIPConfig, TextConfig, VisionConfig
from .data.transforms import CLIP_MEAN, CLIP_STD, convert_to_rgb
from .errors import CorruptFileError

CONTEXT_LENGTH = 52          # Chinese-CLIP 所有发布模型的文本长度
HEAD_WIDTH = 64              # 每个注意力头的宽度（OpenAI 与 BERT 的惯例）
# Chinese-CLIP 的 ViT-H/14 图像塔（宽 1280）用头宽 80，即 16 头
# （cn_clip/clip/model_configs/ViT-H-14.json）；
# 头数不改变任何张量形状，只能按宽度查这张表
VISION_HEAD_WIDTH = {1280: 80}
BERT_MARKER = "bert.embeddings.word_embeddings.weight"


# ---------------------------------------------------------------- 读文件
def read_weights(path: str) -> dict:
    """把文件读成张量字典（还没整理键名）。

    损坏、截断、含 pickle 代码都给出一行清楚的错误。"""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"找不到权重文件 {path!r}；本库不联网下载，请先把 "
                                f"Chinese-CLIP 权重放到本地 / file not found")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path, device="cpu")
        check_zip_crc(path)  # torch.load 不核对校验和
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CorruptFileError:
        raise
    except pickle.UnpicklingError as e:
        # weights_only 拒绝了张量之外的全局名字：恶意载荷正是这个样子
        if "GLOBAL" in str(e):
            raise ValueError(f"拒绝加载 {path!r}：文件里有张量之外的 Python 对象"
                             f"（可能是恶意 pickle），weights_only=True 已阻止它执行"
                             f" / refused unsafe pickle") from None
        raise CorruptFileError(f"{path!r} 已损坏或不是 PyTorch 权重文件"
                               f" / corrupt weights file") from None
    except Exception as e:  # noqa: BLE001  截断的 zip、坏的 safetensors 头等从各层抛出
        raise CorruptFileError(f"{path!r} 已损坏或被截断（{type(e).__name__}: "
                               f"{str(e)[:100]}）；请重新下载 "
                               f"/ corrupt or truncated weights file") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # 训练检查点
        obj = obj["state_dict"]
    if (not isinstance(obj, dict) or not obj
            or not all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise ValueError(f"{path!r} 里没有找到 state dict（键到张量的字典）"
                         f"/ no state dict in file")
    return obj


def _unflash(sd: dict) -> dict:
    """FlashAttention 训练时的键名换回标准键名。

    图像塔 Wqkv → in_proj；BERT 的 Wqkv 拆成 query/key/value。"""
    out = {}
    for k, v in sd.items():
        if ".attn.Wqkv." in k:  # 图像塔：与 nn.MultiheadAttention 的 in_proj 同一布局
            new = k.replace(".attn.Wqkv.weight", ".attn.in_proj_weight")
            out[new.replace(".attn.Wqkv.bias", ".attn.in_proj_bias")] = v
        elif ".attention.self.Wqkv." in k:  # BERT：Q、K、V 按行叠在一起
            base, kind = k.rsplit(".Wqkv.", 1)
            for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[f"{base}.{name}.{kind}"] = part
        elif ".attention.self.out_proj." in k:
            out[k.replace(".attention.self.out_proj.", ".attention.output.dense.")] = v
        else:
            out[k] = v
    return out


def normalize_keys(sd: dict) -> dict:
    """去掉 ``module.`` 前缀、丢掉 CLIP 不用的 ``bert.pooler.*``、
    换回非 FlashAttention 的键名。"""
    sd = {(k[len("module."):] if k.startswith("module.") else k): v
          for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("bert.pooler.")}
    return _unflash(sd)


def is_cnclip_state_dict(sd: dict) -> bool:
    """带 BERT 文本塔（``bert.embeddings.*``）的就是 Chinese-CLIP 的权重。"""
    return any(k.endswith(BERT_MARKER) for k in sd)


# ---------------------------------------------------------------- 推断结构
def _count(sd: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def _shape(sd: dict, key: str) -> tuple:
    if key not in sd:
        raise ValueError(f"Chinese-CLIP 权重缺少 {key!r}（共有 {len(sd)} 个键）；"
                         f"文件不完整或不是 Chinese-CLIP / missing key")
    return tuple(sd[key].shape)


def _square_grid(n_tokens: int, key: str) -> int:
    grid = math.isqrt(max(n_tokens - 1, 0))
    if grid < 1 or grid * grid + 1 != n_tokens:
        raise ValueError(f"{key} 有 {n_tokens} 行，不是 网格² + 1；无法推断图像分辨率"
                         f" / positional embedding is not square")
    return grid


def _infer_vision(sd: dict) -> tuple[VisionConfig, int]:
    """返回 (图像塔配置, 它输出的嵌入维度)。"""
    if "visual.proj" in sd:
        width, _, patch, _ = _shape(sd, "visual.conv1.weight")
        key = "visual.positional_embedding"
        grid = _square_grid(_shape(sd, key)[0], key)
        head_width = VISION_HEAD_WIDTH.get(width, HEAD_WIDTH)
        if width % head_width:
            raise ValueError(f"图像塔宽度 {width} 不能被头宽 {head_width} 整除；"
                             f"这不是 Chinese-CLIP 的 ViT / bad vision width")
        vision = VisionConfig(arch="vit", image_size=grid * patch, patch_size=patch,
                              width=width,
                              layers=_count(sd, "visual.transformer.resblocks."),
                              heads=width // head_width)
        return vision, _shape(sd, "visual.proj")[1]
    if "visual.attnpool.positional_embedding" in sd:
        width = _shape(sd, "visual.layer1.0.conv1.weight")[0]
        key = "visual.attnpool.positional_embedding"
        grid = _square_grid(_shape(sd, key)[0], key)
        layers = tuple(_count(sd, f"visual.layer{i}.") for i in range(1, 5))
        vision = VisionConfig(arch="resnet", image_size=grid * 32, patch_size=0,
                              width=width, layers=layers,
                              heads=width * 32 // HEAD_WIDTH)
        return vision, _shape(sd, "visual.attnpool.c_proj.weight")[0]
    raise ValueError("无法识别图像塔：既没有 visual.proj（ViT）也没有 visual.attnpool"
                     "（ResNet） / unknown vision tower")


def infer_cnclip_config(sd: dict) -> CLIPConfig:
    """从（已整理键名的）state dict 的张量形状推断 Chinese-CLIP 的 CLIPConfig。"""
    vocab, width = _shape(sd, BERT_MARKER)
    hidden = _shape(sd, "bert.encoder.layer.0.intermediate.dense.weight")[0]
    max_positions = _shape(sd, "bert.embeddings.position_embeddings.weight")[0]
    if width % HEAD_WIDTH:
        raise ValueError(f"BERT 宽度 {width} 不能被头宽 {HEAD_WIDTH} 整除"
                         f" / bad BERT width")
    type_vocab = _shape(sd, "bert.embeddings.token_type_embeddings.weight")[0]
    text = TextConfig(arch="bert", vocab_size=vocab,
                      context_length=min(CONTEXT_LENGTH, max_positions), width=width,
                      heads=width // HEAD_WIDTH,
                      layers=_count(sd, "bert.encoder.layer."),
                      mlp_ratio=hidden / width, max_positions=max_positions,
                      type_vocab_size=type_vocab, pad_token_id=0, dropout=0.1)
    vision, vision_out = _infer_vision(sd)
    proj_in, embed_dim = _shape(sd, "text_projection")
    if proj_in != width or vision_out != embed_dim:
        raise ValueError(f"形状对不上：text_projection 为 {(proj_in, embed_dim)}，"
                         f"BERT 宽 {width}、图像塔输出 {vision_out}；"
                         f"两座塔的权重可能来自不同模型 / towers do not fit together")
    return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text, quick_gelu=True)


# ---------------------------------------------------------------- 建模型
def cnclip_transform(image_size: int) -> T.Compose:
    """Chinese-CLIP 的图像预处理：双三次缩放到 image_size×image_size（不裁剪）
    → RGB → 张量 → CLIP 均值方差。"""
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC),
        convert_to_rgb,
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def cnclip_from_state_dict(sd: dict, device: str | torch.device = "cpu"):
    """state dict → ``(CLIP, preprocess)``（BERT 文本塔）。

    键或形状与推断出的结构不符时列出具体的键。"""
    from .model import CLIP

    sd = normalize_keys(sd)
    config = infer_cnclip_config(sd)
    model = CLIP(config)
    expected = model.state_dict()
    unexpected = sorted(k for k in sd if k not in expected)
    missing = sorted(k for k in expected
                     if k not in sd and not k.endswith("num_batches_tracked"))
    wrong = [f"{k}: 文件 {tuple(sd[k].shape)} ≠ 模型 {tuple(v.shape)}"
             for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if unexpected or missing or wrong:
        raise ValueError(
            "Chinese-CLIP 权重与推断出的结构对不上"
            " / state dict does not match the inferred architecture："
            f"多余的键 {unexpected[:5]}；缺少的键 {missing[:5]}；形状不符 {wrong[:5]}"
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(state, strict=False)
    return model.to(device).eval(), cnclip_transform(config.vision.image_size)


def load_cnclip(path: str, device: str | torch.device = "cpu"):
    """读 Chinese-CLIP 检查点，返回 ``(模型, preprocess)``。

    ``clipedu.load_pretrained`` 也会自动转到这里。"""
    sd = read_weights(path)
    if not is_cnclip_state_dict(sd):
        raise ValueError(f"{path!r} 不是 Chinese-CLIP 权重（没有 bert.embeddings.*）；"
                         f"OpenAI/open_clip 权重请用 "
                         f"clipedu.load_pretrained / not a Chinese-CLIP checkpoint")
    return cnclip_from_state_dict(sd, device)


__all__ = ["read_weights", "normalize_keys", "is_cnclip_state_dict",
           "infer_cnclip_config", "cnclip_transform", "cnclip_from_state_dict",
           "load_cnclip"]

"""加载 OpenAI / open_clip 的预训练权重，从张量形状推断结构（见第 5 章 sec-code-pretrained）。

支持三种文件，都只读张量、绝不执行文件里的代码：
- ``.safetensors``：纯张量格式，用 ``safetensors`` 读；
- 普通 state dict（``.pt``/``.bin``，open_clip 的检查点）：``torch.load(..., weights_only=True)``；
- OpenAI 发布的 TorchScript 存档（``ViT-B-32.pt`` 等）：它是 zip，里面的 ``data.pkl`` 是一个 pickle。
  ``torch.jit.load`` 会编译并运行存档里的 TorchScript 代码，所以这里用一个白名单反序列化器
  只取出张量：``__torch__.*`` 类一律变成只存属性的空壳，其余任何全局名字都会被拒绝。
结构推断与 OpenAI ``build_model`` 相同：有 ``visual.proj`` 就是 ViT，否则是 ModifiedResNet；
头数按 OpenAI 的约定取 width // 64。
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict

import torch

from .bert_tokenizer import BertChineseTokenizer, tokenizer_from_state_dict
from .errors import CorruptFileError
from .checkpoint import build_model_checked, check_zip_crc, is_clipedu_checkpoint, load_checkpoint
from .config import CLIPConfig, TextConfig, VisionConfig, config_from_file
from .model import CLIP
from .tokenizer import ChineseTokenizer

# 检查点里常见、但模型不需要的键：OpenAI 存档里的整数元数据、open_clip 的因果掩码缓冲区
_IGNORED_KEYS = {"input_resolution", "context_length", "vocab_size", "attn_mask"}

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


# TorchScript 用它们给列表等容器打类型标签；都只是原样返回数据，这里换成等价的无害函数
_JIT_PICKLE_HELPERS = {
    "build_intlist": lambda data: data, "build_tensorlist": lambda data: data,
    "build_doublelist": lambda data: data, "build_boollist": lambda data: data,
    "build_genericlist": lambda data: data, "restore_type_tag": lambda value, type_str: value,
}


class _ScriptObject:
    """TorchScript 模块在 pickle 里的替身：只记下属性字典，不带任何方法。"""

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return torch.empty(0, dtype=storage.dtype).set_(storage.untyped_storage(), offset, size, stride)


class _TensorOnlyUnpickler(pickle.Unpickler):
    """白名单反序列化：只认张量重建函数、存储类型、OrderedDict、TorchScript 的容器标签与 ``__torch__.*`` 空壳。"""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name in _JIT_PICKLE_HELPERS:
            return _JIT_PICKLE_HELPERS[name]
        if module.startswith("__torch__"):
            return _ScriptObject
        raise pickle.UnpicklingError(
            f"拒绝加载：存档要求执行 {module}.{name}，这不是张量数据；文件可能被篡改或不是 CLIP 权重 "
            f"/ refusing to unpickle global {module}.{name}"
        )

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"未知的存储记录 {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.empty(0, dtype=dtype).set_(untyped, 0, (numel,), (1,))


def _flatten_script_object(obj, prefix: str, out: dict) -> None:
    """把嵌套的 TorchScript 模块空壳展平成 {'visual.conv1.weight': tensor, ...}。"""
    state = obj.state if isinstance(obj, _ScriptObject) else obj
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, (_ScriptObject, dict)):
            _flatten_script_object(value, f"{prefix}{name}.", out)


def _read_torchscript(path: str) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pkl:
            raise ValueError(f"{path} 是 zip，但没有 data.pkl：不是 TorchScript 存档也不是 torch.save 文件")
        prefix = pkl[0].split("/")[0]
        with archive.open(pkl[0]) as f:
            root = _TensorOnlyUnpickler(f, archive, prefix).load()
    state: dict[str, torch.Tensor] = {}
    _flatten_script_object(root, "", state)
    return state


def is_torchscript(path: str) -> bool:
    """文件是不是 OpenAI 式的 TorchScript 存档（zip 里有 constants.pkl 或 code/）。"""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def load_safetensors(path: str) -> dict[str, torch.Tensor]:
    """读 .safetensors；文件头或数据坏了时说出是哪个文件。"""
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001  SafetensorError、截断时的 OSError 等
        raise CorruptFileError(f"{path} 不是有效的 safetensors 文件（{type(e).__name__}: {str(e)[:100]}）"
                               " / invalid safetensors file") from None


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """从 .safetensors / state dict / TorchScript 存档里只读出张量，去掉 ``module.`` 与 ``state_dict`` 外壳。"""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"找不到权重文件 {path!r}；本库不联网下载，请先把权重放到本地 / file not found")
    if path.endswith(".safetensors"):
        sd = load_safetensors(path)
    elif is_torchscript(path):
        sd = _read_torchscript(path)
    else:
        check_zip_crc(path)  # 中间坏了的 zip：torch.load 不核对校验和
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            from .errors import describe_unsafe_pickle, unsafe_global  # [hardening]
            if unsafe_global(e) is None:
                raise CorruptFileError(f"{path!r} 已损坏或不是 PyTorch 权重文件"
                                       f" / corrupt weights file") from None
            raise ValueError(f"拒绝加载 {path!r}：{describe_unsafe_pickle(e)}"
                             f" / refused unsafe pickle") from None
        except Exception as e:  # noqa: BLE001  截断的 zip、乱码文件会从各层抛出各种异常
            raise CorruptFileError(f"{path!r} 已损坏或被截断"
                                   f"（{type(e).__name__}: {str(e)[:100]}）"
                                   f" / corrupt or truncated weights file") from None
    for wrapper in ("state_dict", "model"):  # 训练脚本常见的外壳：{"state_dict": {...}, "epoch": ...}
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{path!r} 里没有找到 state dict（得到 {type(sd).__name__}）")
    if all(k.startswith("module.") for k in sd):  # DDP 包装后保存的权重
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _count_blocks(sd: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def infer_config(sd: dict[str, torch.Tensor], quick_gelu: bool = True) -> CLIPConfig:
    """照 OpenAI build_model 从张量形状推断 CLIPConfig（ViT 或 ResNet、宽度、层数、图块、分辨率…）。"""
    need = ["text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"这不像 CLIP 的权重：缺少 {missing}（共有 {len(sd)} 个键，例如 {list(sd)[:3]}）")
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = VisionConfig(arch="vit", image_size=patch * grid, patch_size=patch, width=width,
                              layers=_count_blocks(sd, "visual.transformer.resblocks."), heads=width // 64)
    elif "visual.attnpool.positional_embedding" in sd:
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        layers = tuple(_count_blocks(sd, f"visual.layer{i}.") for i in range(1, 5))
        vision = VisionConfig(arch="resnet", image_size=grid * 32, patch_size=0, width=width,
                              layers=layers, heads=width * 32 // 64)
    else:
        raise ValueError("无法识别图像塔：既没有 visual.proj（ViT）也没有 visual.attnpool（ResNet）")
    vocab, text_width = sd["token_embedding.weight"].shape
    text = TextConfig(vocab_size=vocab, context_length=sd["positional_embedding"].shape[0], width=text_width,
                      heads=text_width // 64, layers=_count_blocks(sd, "transformer.resblocks."),
                      eos_token_id=vocab - 1)  # OpenAI 词表里 <|endoftext|> 是最大的 id（49407）
    if vision.heads < 1 or text.heads < 1:  # 头数按宽度 // 64 推断：更窄的不是 OpenAI/open_clip 的权重
        raise ValueError(f"宽度（图像 {vision.width}、文本 {text_width}）小于 64，推断不出头数，不像 OpenAI/open_clip"
                         " 的权重；clipedu 自己训练的模型请用带配置的 .pt 检查点 / cannot infer architecture")
    return CLIPConfig(embed_dim=sd["text_projection"].shape[1], vision=vision, text=text, quick_gelu=quick_gelu)


def load_pretrained(path: str, device: str | torch.device = "cpu", quick_gelu: bool = True):
    """读 OpenAI/open_clip 或 Chinese-CLIP 权重，返回 ``(CLIP, preprocess)``。

    见第 5 章 sec-code-pretrained；Chinese-CLIP 见第 6 章 sec-cnclip。

    OpenAI 原版权重用 QuickGELU（默认）；open_clip 里不带 ``-quickgelu`` 的模型请传 ``quick_gelu=False``。
    权重统一转成 fp32；需要半精度时再 ``.to(torch.bfloat16)`` 或用 autocast。
    """
    from .data.transforms import eval_transform

    sd = read_state_dict(str(path))
    from .fileinfo import build_from_config, looks_like_clipedu, refuse_unconfigured, stored_config
    stored = stored_config(str(path))  # [hardening] clipedu 自己写的文件：照保存的配置建模型，不推断
    if stored is not None:
        model = build_from_config(stored, sd, str(path))
        return model.to(device).eval(), eval_transform(stored.vision.image_size)
    if looks_like_clipedu(sd):
        raise refuse_unconfigured(str(path))
    from .cnclip_weights import cnclip_from_state_dict, is_cnclip_state_dict
    # Chinese-CLIP（BERT 文本塔）：见 clipedu.cnclip_weights
    if is_cnclip_state_dict(sd):
        return cnclip_from_state_dict(sd, device)
    config = infer_config(sd, quick_gelu=quick_gelu)
    model = CLIP(config)
    expected = model.state_dict()
    # TorchScript 存档里还有非参数的张量属性（如各块的 attn_mask），只有普通 state dict 才对多余的键报错
    strict = not is_torchscript(str(path))
    unexpected = sorted(k for k in sd if strict and k not in expected
                        and k.rsplit(".", 1)[-1] not in _IGNORED_KEYS)
    missing = sorted(k for k in expected if k not in sd and not k.endswith("num_batches_tracked"))
    wrong = [f"{k}: 文件 {tuple(sd[k].shape)} ≠ 模型 {tuple(v.shape)}"
             for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if unexpected or missing or wrong:
        raise ValueError(
            "权重与推断出的结构对不上 / state dict does not match the inferred architecture：\n"
            f"  多余的键：{unexpected[:10]}\n  缺少的键：{missing[:10]}\n  形状不符：{wrong[:10]}"
        )
    state = {k: sd[k].float() if sd[k].is_floating_point() else sd[k] for k in expected if k in sd}
    model.load_state_dict(state, strict=False)  # 只有 num_batches_tracked 可能缺（OpenAI 存档不带它）
    return model.to(device).eval(), eval_transform(config.vision.image_size)


def english_tokenizer(context_length: int = 77):
    """OpenAI 英文权重用的 CLIP BPE 分词器，取自已安装的 open_clip（词表随包附带，不联网）。

    返回的对象与 ``ChineseTokenizer`` 一样可调用：``tok(texts) -> LongTensor[B, context_length]``。
    clipedu 自己训练的模型仍用 ``ChineseTokenizer``。
    """
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise ImportError(
            "英文 CLIP 权重需要 BPE 分词器，但没有安装 open_clip；请先 pip install open-clip-torch。"
            "clipedu 训练的中文模型请用 clipedu.ChineseTokenizer / open_clip is not installed"
        ) from None
    return SimpleTokenizer(context_length=context_length)


def load_init_weights(
        path: str) -> tuple[CLIPConfig, dict, ChineseTokenizer | BertChineseTokenizer]:
    """``--init-from``：返回 (模型配置, 权重, 分词器)（见第 9 章 faq-finetune）。

    clipedu 检查点原样载入；OpenAI/open_clip 权重（.safetensors、state dict、
    TorchScript）由 ``read_state_dict`` 读出。英文权重的词表（49408 个 BPE 词元）
    与 ChineseTokenizer 不同，所以像 Chinese-CLIP 那样：保留形状相符的全部权重
    （整个图像塔与文本 Transformer），换成中文词表，只有 ``token_embedding`` 按新
    词表重新初始化。常与 ``--lock-image`` 一起用。
    """
    from .fileinfo import looks_like_clipedu, refuse_unconfigured, stored_config

    path = str(path)
    if not (path.endswith(".safetensors") or is_torchscript(path)):
        ckpt = load_checkpoint(path)
        if is_clipedu_checkpoint(ckpt):
            return (config_from_file(ckpt["config"], path), ckpt["model"],
                    tokenizer_from_state_dict(ckpt["tokenizer"]))
    sd = read_state_dict(path)
    stored = stored_config(path)  # clipedu 导出的 .safetensors：照保存的配置，不推断
    if stored is not None:
        tok_cls = BertChineseTokenizer if stored.text.arch == "bert" else ChineseTokenizer
        return stored, sd, tok_cls(context_length=stored.text.context_length)
    if looks_like_clipedu(sd):
        raise refuse_unconfigured(path)
    from .cnclip_weights import (infer_cnclip_config, is_cnclip_state_dict,
                                 normalize_keys)
    if is_cnclip_state_dict(sd):
        # Chinese-CLIP：整套权重照搬，保留它自己的 BERT 分词器
        sd = normalize_keys(sd)
        config = infer_cnclip_config(sd)
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in sd.items()}
        tokenizer = BertChineseTokenizer(context_length=config.text.context_length)
        return config, state, tokenizer
    config = infer_config(sd)
    tokenizer = ChineseTokenizer(context_length=config.text.context_length)
    if config.text.vocab_size != tokenizer.vocab_size:
        config.text.vocab_size = tokenizer.vocab_size
        config.text.eos_token_id = tokenizer.eos_id
        sd = {k: v for k, v in sd.items() if k != "token_embedding.weight"}
        print(f"--init-from {path}：英文词表换成中文词表，token_embedding 重新初始化，"
              f"其余权重照搬", flush=True)
    with torch.device("meta"):
        own = set(CLIP(config).state_dict())
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in sd.items() if k in own}
    return config, state, tokenizer


def init_model_from(path: str) -> tuple[CLIP, ChineseTokenizer]:
    """按 load_init_weights 建好 CLIP 并载入权重。

    从英文权重来时只有 token_embedding 保持随机初始化。
    """
    config, state, tokenizer = load_init_weights(path)
    # 从英文权重初始化时 token_embedding 按中文词表重建，其余键必须齐全且形状一致；
    # Chinese-CLIP 的键必须全部齐全
    strict = "token_embedding.weight" in state or config.text.arch == "bert"
    return build_model_checked(config, state, strict=strict), tokenizer


__all__ = ["load_pretrained", "read_state_dict", "infer_config", "english_tokenizer",
           "is_torchscript", "load_init_weights", "init_model_from"]

"""模型与训练配置：带注释的 dataclass 与预设（见第 5 章 sec-code-config）。"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

# 数值字段的上限定义在不依赖 torch 的 argtypes 里：命令行与 TrainConfig.validate 共用
from .argtypes import MAX_BATCH_SIZE, MAX_EVAL_SIZE, MAX_LR, MAX_LR_MULT, MAX_NUM_WORKERS, MAX_SEED
from .tokenizer import DEFAULT_CONTEXT_LENGTH, EOS_ID, VOCAB_SIZE


@dataclass
class VisionConfig:
    arch: str = "vit"            # 图像塔结构："vit"（VisionTransformer）或 "resnet"（ModifiedResNet）
    image_size: int = 32         # 输入图像边长（像素），正方形
    patch_size: int = 4          # ViT 的图块边长；ResNet 不用
    width: int = 128             # ViT：隐藏维度；ResNet：第一阶段通道数（RN50 为 64）
    layers: int | tuple = 3      # ViT：Transformer 层数；ResNet：四个阶段的块数，如 (3, 4, 6, 3)
    heads: int = 4               # 注意力头数（ViT 各层，或 ResNet 的注意力池化）
    mlp_ratio: float = 4.0       # MLP 隐藏层相对 width 的倍数


@dataclass
class TextConfig:
    # 文本塔："transformer"（OpenAI 因果 Transformer）或 "bert"（Chinese-CLIP）
    arch: str = "transformer"
    vocab_size: int = VOCAB_SIZE               # 词表大小，默认等于内置中文词表
    context_length: int = DEFAULT_CONTEXT_LENGTH  # 最大词元数（含 [SOS] 与 [EOS]）
    width: int = 128                           # 隐藏维度
    heads: int = 4                             # 注意力头数
    layers: int = 3                            # Transformer 层数
    mlp_ratio: float = 4.0                     # MLP 隐藏层倍数
    eos_token_id: int = EOS_ID                 # 在这个 id 第一次出现的位置取句向量（OpenAI 词表为 49407）
    # ---- 只有 arch="bert" 用（见第 6 章 sec-cnclip）----
    # BERT 位置表的行数（可学习的绝对位置，≥ context_length）
    max_positions: int = 512
    # 词元类型（句 A / 句 B）表的行数；CLIP 只用类型 0
    type_vocab_size: int = 2
    pad_token_id: int = 0                      # [PAD] 的 id：注意力掩码据此屏蔽补齐位置
    # BERT 的 dropout（Chinese-CLIP 训练时为 0.1）
    dropout: float = 0.0


@dataclass
class CLIPConfig:
    embed_dim: int = 128                                     # 共享嵌入空间的维度
    vision: VisionConfig = field(default_factory=VisionConfig)  # 图像塔
    text: TextConfig = field(default_factory=TextConfig)        # 文本塔
    # OpenAI 原版权重用 QuickGELU；新训练用 GELU
    quick_gelu: bool = False
    # 对数逆温度 logit_scale = ln(1/τ) 的初值：τ = 0.07
    init_logit_scale: float = math.log(1 / 0.07)
    # 每步优化后把 logit_scale 截断到 [0, ln 100]，即 1/τ ≤ 100
    max_logit_scale: float = math.log(100.0)

    def to_dict(self) -> dict:
        """纯 Python 数据，可写进检查点（weights_only=True 可读）与 JSON。"""
        d = asdict(self)
        layers = d["vision"]["layers"]
        if isinstance(layers, (list, tuple)):  # ResNet 各阶段的层数：JSON 里是列表
            d["vision"]["layers"] = list(layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        v = dict(d["vision"])
        if isinstance(v.get("layers"), list):
            v["layers"] = tuple(v["layers"])
        known_v = {f.name for f in fields(VisionConfig)}
        known_t = {f.name for f in fields(TextConfig)}
        known_c = {f.name for f in fields(cls)} - {"vision", "text"}
        unknown = ((set(v) - known_v) | (set(d["text"]) - known_t)
                   | (set(d) - known_c - {"vision", "text"}))
        if unknown:
            raise ValueError(f"配置中有未知字段：{sorted(unknown)}")
        return cls(
            vision=VisionConfig(**v),
            text=TextConfig(**d["text"]),
            **{k: d[k] for k in known_c if k in d},
        )


def config_from_file(d, path) -> CLIPConfig:
    """检查点、safetensors 元数据里存的模型配置 → CLIPConfig；缺字段、类型不对时说是哪个文件。"""
    try:
        return CLIPConfig.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path} 里的模型配置无效（{type(e).__name__}: {e}）；文件不是 clipedu 写的"
                         "或已被改坏 / invalid model config") from None


def _openai_text(**kw) -> TextConfig:
    """OpenAI CLIP 的文本塔形状（宽 512、8 头、12 层、上下文 77），词表用内置中文词表。"""
    return TextConfig(**{"context_length": 77, "width": 512, "heads": 8, "layers": 12, **kw})


PRESETS: dict[str, CLIPConfig] = {
    # 默认：2 个 CPU 核两分钟内学会几何图形世界（32 px、8×8 图块 → 16 个图块）。
    # 图块 8 比图块 4（64 个图块）每步快约 3 倍，同样步数下留出组合准确率还更高
    # （见 benchmarks/results/tiny_cpu_quality.md）
    "tiny-cpu": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(arch="vit", image_size=32, patch_size=8, width=128, layers=3, heads=4),
        text=TextConfig(context_length=32, width=128, heads=4, layers=3),
    ),
    # 单卡或多核 CPU 上的中等模型
    "small": CLIPConfig(
        embed_dim=256,
        vision=VisionConfig(arch="vit", image_size=64, patch_size=8, width=256, layers=6, heads=8),
        text=TextConfig(context_length=64, width=256, heads=4, layers=6),
    ),
    # OpenAI RN50 的形状：ModifiedResNet (3,4,6,3)，宽 64，注意力池化 32 头，嵌入 1024
    "rn50": CLIPConfig(
        embed_dim=1024,
        vision=VisionConfig(arch="resnet", image_size=224, patch_size=0, width=64, layers=(3, 4, 6, 3), heads=32),
        text=_openai_text(),
    ),
    # OpenAI ViT-B/32 的形状：224 px、图块 32、宽 768、12 层、12 头，嵌入 512
    "vit-b-32": CLIPConfig(
        embed_dim=512,
        vision=VisionConfig(arch="vit", image_size=224, patch_size=32, width=768, layers=12, heads=12),
        text=_openai_text(),
    ),
    # OpenAI ViT-B/16 的形状
    "vit-b-16": CLIPConfig(
        embed_dim=512,
        vision=VisionConfig(arch="vit", image_size=224, patch_size=16, width=768, layers=12, heads=12),
        text=_openai_text(),
    ),
}


def _cn_clip(embed_dim: int, vision: VisionConfig, text_layers: int,
             text_width: int = 768) -> CLIPConfig:
    """Chinese-CLIP 的形状：图像塔同 OpenAI（QuickGELU），文本塔是中文 RoBERTa-wwm
    （BERT 结构，词表 21128）。"""
    text = TextConfig(arch="bert", vocab_size=21128, context_length=52,
                      width=text_width, heads=text_width // 64, layers=text_layers,
                      max_positions=512, type_vocab_size=2, pad_token_id=0, dropout=0.1)
    return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text, quick_gelu=True)


# Chinese-CLIP 发布的五个模型（cn_clip/clip/model_configs/*.json）；形状与参数量在
# tests/test_cnclip_model.py 核对
PRESETS.update({
    # RN50 + RBT3（3 层 RoBERTa）
    "cn-clip-rn50": _cn_clip(
        1024, VisionConfig(arch="resnet", image_size=224, patch_size=0, width=64,
                           layers=(3, 4, 6, 3), heads=32), text_layers=3),
    # ViT-B/16 + RoBERTa-wwm-ext-base（12 层）
    "cn-clip-vit-b-16": _cn_clip(
        512, VisionConfig(arch="vit", image_size=224, patch_size=16, width=768,
                          layers=12, heads=12), text_layers=12),
    # ViT-L/14 + RoBERTa-wwm-ext-base
    "cn-clip-vit-l-14": _cn_clip(
        768, VisionConfig(arch="vit", image_size=224, patch_size=14, width=1024,
                          layers=24, heads=16), text_layers=12),
    # ViT-L/14 @ 336 px
    "cn-clip-vit-l-14-336": _cn_clip(
        768, VisionConfig(arch="vit", image_size=336, patch_size=14, width=1024,
                          layers=24, heads=16), text_layers=12),
    # ViT-H/14（头宽 80：16 头）+ RoBERTa-wwm-ext-large（24 层、宽 1024）
    "cn-clip-vit-h-14": _cn_clip(
        1024, VisionConfig(arch="vit", image_size=224, patch_size=14, width=1280,
                           layers=32, heads=16), text_layers=24, text_width=1024),
})


# 限时训练的配方：命令行训练这些预设时给了 --time-budget（几何图形数据、不是微调），没显式给出的几项用这里的值。
# 第 5 章 sec-time-budget 讲为什么；benchmarks/results/tiny_cpu_quality.md 逐项测过（批 64、权重衰减 0.3、预热 30 步）。
# 只影响命令行：Python API 的 TrainConfig 默认值不变，笔记本的数字也就不变。
BUDGET_RECIPES: dict[str, dict] = {
    "tiny-cpu": {"batch_size": 64, "weight_decay": 0.3, "warmup_steps": 30},
}


def get_preset(name: str) -> CLIPConfig:
    """按名字取预设（返回副本，修改它不会影响 PRESETS）。"""
    if name not in PRESETS:
        raise ValueError(f"未知预设 {name!r}；可选：{', '.join(PRESETS)} / unknown preset")
    return CLIPConfig.from_dict(PRESETS[name].to_dict())


@dataclass
class TrainConfig:
    # ---- 模型与数据 ----
    preset: str = "tiny-cpu"                 # PRESETS 中的名字
    model: Optional[CLIPConfig] = None       # 直接给出模型配置时覆盖 preset
    dataset: str = "shapes"                  # "shapes" | "digits" | "csv" | "cn-clip" | "wds"
    data_path: Optional[str] = None          # 真实数据的本地路径（csv/tsv 文件、Chinese-CLIP 目录或 wds 分片）
    max_objects: int = 1                     # 几何图形世界中每张图的物体数上限（1–3）
    num_workers: int = 0                     # DataLoader 进程数；2 核机器上 0 最快
    # ---- 优化 ----
    steps: int = 1000                        # 优化器步数上限
    time_budget: Optional[float] = None      # 训练时间上限（秒）；到时即停并保存
    batch_size: int = 128                    # 全局批大小（所有进程、所有累积微批之和）
    lr: float = 2e-3                         # 峰值学习率（为 tiny-cpu 调过；大模型用 5e-4 左右）
    weight_decay: float = 0.1                # AdamW 权重衰减（不作用于增益、偏置、嵌入与 logit_scale）
    betas: tuple = (0.9, 0.98)               # AdamW 的 β1、β2（CLIP 论文的取值）
    eps: float = 1e-6                        # AdamW 的 ε
    warmup_steps: int = 50                   # 线性预热步数，之后余弦衰减到 0
    grad_clip: Optional[float] = None        # 梯度范数裁剪阈值；None 表示不裁剪
    ema_decay: float = 0.0                   # 参数 EMA 的衰减率上限 ρ（如 0.999）；0 表示不用（见 ema.py）
    seed: int = 0                            # 运行种子；各进程种子由它派生
    # ---- 设备与精度 ----
    device: str = "auto"                     # "auto" | "cpu" | "cuda"
    precision: str = "fp32"                  # "fp32" | "bf16" | "fp16" | "amp_bf16" | "amp_fp16"
    accum_steps: int = 1                     # 对比学习式梯度累积的微批数
    grad_checkpointing: bool = False         # 两个塔都用激活重算换显存
    compile: bool = False                    # 用 torch.compile 编译模型
    local_loss: bool = False                 # 分布式：只算本进程的行（见 loss.ClipLoss）
    gather_with_grad: bool = True            # 分布式：all_gather 时保留梯度
    # ---- 微调 ----
    init_from: Optional[str] = None          # 从已有检查点或预训练权重初始化
    lock_image: bool = False                 # 冻结图像塔（LiT 式微调）
    head_lr_mult: float = 1.0                # 投影头与 logit_scale 的学习率倍数
    # 图像塔（投影头除外）的学习率倍数；微调时常取 0.1（0 等于冻结）
    image_lr_mult: float = 1.0
    # ---- 保存、日志与评估 ----
    out_dir: str = "runs/tiny-cpu"           # 输出目录：last.pt、metrics.json、log.jsonl
    overwrite: bool = False                  # out_dir 里已有一次训练时删掉它的文件、从头开始（默认拒绝）
    save_every: int = 0                      # 每 N 步保存一次检查点；0 表示只在结束时保存
    keep_last: int = 3                       # 保留最近 K 个按步保存的检查点
    resume: Optional[str] = None             # "latest" 或检查点路径
    eval_every: int = 0                      # 每 N 步评估一次；0 表示只在结束时评估
    eval_size: int = 1000                    # 评估用的测试样本数；0 表示不评估
    log_every: int = 1                       # 每 N 步写一行 log.jsonl
    tensorboard: bool = False                # 同时写 TensorBoard 日志
    progress: bool = True                    # 显示 tqdm 进度条
    strict: bool = False                     # 真实数据：遇到第一个坏样本即报错
    max_bad_fraction: float = 0.01           # 真实数据：坏样本比例超过它就停止
    # ---- CSV/TSV 数据（--dataset csv），与 data shard 的同名旗标一致 ----
    csv_img_key: str = "filepath"            # 图像路径列名
    csv_caption_key: str = "title"           # 文本列名
    csv_separator: Optional[str] = None      # 分隔符；None 表示按扩展名（.csv 逗号，.tsv 制表符）
    encoding: str = "utf-8"                  # 表格文件的编码，如 GBK 文件用 "gb18030"

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """检查每个字段的类型与取值范围；不合法时抛 UsageError，说明是哪个字段（命令行旗标）。

        构造与 ``replace`` 时自动调用；训练开始前再调用一次，拦住构造后被改坏的字段。
        路径字段也接受 ``pathlib.Path``（例如 ``clipedu.run_dir`` 的返回值），统一存成字符串。
        """
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, os.PathLike) and isinstance(os.fspath(value), str):
                setattr(self, name, os.fspath(value))
        validate_train_config(self)
        return self

    def model_config(self) -> CLIPConfig:
        return self.model if self.model is not None else get_preset(self.preset)


_PATH_FIELDS = ("out_dir", "data_path", "init_from", "resume")
TRAIN_DATASETS = ("shapes", "digits", "csv", "cn-clip", "wds")
PRECISION_NAMES = ("fp32", "bf16", "fp16", "amp_bf16", "amp_fp16")


# 旗标名与字段名不同的字段；eps、betas 只能在 API 里设（命令行没有对应旗标）
_FLAG_NAMES = {"out_dir": "--out", "progress": "--no-progress", "gather_with_grad": "--no-gather-with-grad"}
_API_ONLY = ("eps", "betas")


def _flag(name: str) -> str:
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _bad(name: str, value, expected: str):
    from .errors import UsageError
    if name in _API_ONLY:
        return UsageError(f"TrainConfig.{name} 应为{expected}，实际为 {value!r} / invalid value for {name}")
    return UsageError(f"{_flag(name)}（TrainConfig.{name}）应为{expected}，实际为 {value!r} / invalid value for {_flag(name)}")


def _check_int(cfg, name: str, low: int, high: Optional[int] = None) -> None:
    v = getattr(cfg, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
        rng = f"[{low}, {high}] 内的整数" if high is not None else f"≥ {low} 的整数"
        raise _bad(name, v, " " + rng)


def _check_float(cfg, name: str, low: float, high: float = math.inf, low_open: bool = False,
                 optional: bool = False) -> None:
    v = getattr(cfg, name)
    if optional and v is None:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > low if low_open else v >= low) and v <= high
    if not ok:
        rng = (f"{'>' if low_open else '≥'} {low:g} 的有限实数" if not math.isfinite(high) else
               f"{'(' if low_open else '['}{low:g}, {high:g}] 内的实数")
        raise _bad(name, v, " " + rng + ("（或不设）" if optional else ""))


def parse_device(name) -> str:
    """设备名只能是 auto、cpu、cuda 或 cuda:N；其余（tpu、mps…）本库不支持。"""
    if isinstance(name, str) and (name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name)):
        return name
    from .errors import UsageError
    raise UsageError(f"--device 应为 auto、cpu、cuda 或 cuda:N，实际为 {name!r}；本库不支持其他设备 / unsupported device")


def check_encoding(name) -> str:
    """编码名必须是 Python 认识的文本编码，如 utf-8、gb18030。"""
    import codecs
    from .errors import UsageError
    try:
        if not isinstance(name, str) or not codecs.lookup(name)._is_text_encoding:
            raise LookupError(name)
    except LookupError:
        raise UsageError(f"--encoding：未知的文本编码 {name!r}；常用的有 utf-8、gb18030 / unknown encoding") from None
    return name


def check_separator(sep) -> str:
    """CSV/TSV 分隔符必须恰好是一个字符（csv 模块的要求）；命令行里的 ``\\t`` 认作制表符。"""
    from .errors import UsageError
    if sep == "\\t":
        return "\t"
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\r\n\"":
        raise UsageError(f"--csv-separator 应为一个字符（如 , 或制表符），实际为 {sep!r} / invalid separator")
    return sep


def validate_train_config(cfg: "TrainConfig") -> None:
    from .errors import UsageError

    if cfg.model is None and cfg.preset not in PRESETS:
        raise UsageError(f"未知预设 {cfg.preset!r}；可选：{', '.join(PRESETS)} / unknown preset")
    if cfg.model is not None and not isinstance(cfg.model, CLIPConfig):
        raise UsageError(f"TrainConfig.model 应为 CLIPConfig，实际为 {type(cfg.model).__name__}")
    if cfg.dataset not in TRAIN_DATASETS:
        raise UsageError(f"未知数据集 {cfg.dataset!r}；--dataset 可选：{', '.join(TRAIN_DATASETS)} / unknown dataset")
    if cfg.precision not in PRECISION_NAMES:
        raise UsageError(f"未知精度 {cfg.precision!r}；--precision 可选：{', '.join(PRECISION_NAMES)} / unknown precision")
    parse_device(cfg.device)
    for name, low, high in (("steps", 1, None), ("batch_size", 1, MAX_BATCH_SIZE), ("accum_steps", 1, MAX_BATCH_SIZE),
                            ("warmup_steps", 0, None), ("seed", 0, MAX_SEED), ("max_objects", 1, 3),
                            ("num_workers", 0, MAX_NUM_WORKERS), ("save_every", 0, None), ("keep_last", 0, None),
                            ("eval_every", 0, None), ("eval_size", 0, MAX_EVAL_SIZE), ("log_every", 1, None)):
        _check_int(cfg, name, low, high)
    _check_float(cfg, "lr", 0.0, MAX_LR)  # 0 也合法：测试与对照实验里用它检查初始化
    _check_float(cfg, "weight_decay", 0.0, MAX_LR)
    _check_float(cfg, "eps", 0.0, low_open=True)
    _check_float(cfg, "head_lr_mult", 0.0, MAX_LR_MULT)
    _check_float(cfg, "image_lr_mult", 0.0, MAX_LR_MULT)
    _check_float(cfg, "max_bad_fraction", 0.0, 1.0)
    _check_float(cfg, "time_budget", 0.0, optional=True)  # 0：训练一步就停（测试用）
    _check_float(cfg, "grad_clip", 0.0, low_open=True, optional=True)
    _check_float(cfg, "ema_decay", 0.0, 0.9999)  # 1 意味着 θ̄ 永远停在初始值
    betas = tuple(cfg.betas) if isinstance(cfg.betas, (tuple, list)) else ()
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
        raise UsageError(f"TrainConfig.betas 应为两个 [0, 1) 内的数，实际为 {cfg.betas!r} / invalid betas")
    for name in ("grad_checkpointing", "compile", "local_loss", "gather_with_grad", "lock_image",
                 "tensorboard", "progress", "strict", "overwrite"):
        if not isinstance(getattr(cfg, name), bool):
            raise _bad(name, getattr(cfg, name), " True 或 False")
    for name in ("out_dir", "csv_img_key", "csv_caption_key"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
            raise _bad(name, getattr(cfg, name), "非空字符串")
    for name in ("data_path", "init_from", "resume", "csv_separator"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, str) or not v):
            raise _bad(name, v, "非空字符串（或不设）")
    for name in ("out_dir", "data_path", "init_from", "resume"):
        if "\x00" in (getattr(cfg, name) or ""):  # 操作系统的路径里不能有 NUL
            raise _bad(name, getattr(cfg, name), "不含 NUL 字符的路径")
    if cfg.csv_separator is not None:
        check_separator(cfg.csv_separator)
    check_encoding(cfg.encoding)
    if cfg.resume and cfg.overwrite:
        raise UsageError("--resume 与 --overwrite（TrainConfig.resume、overwrite）不能同时使用："
                         "一个接着旧训练，一个丢弃旧训练 / conflicting flags")


__all__ = ["VisionConfig", "TextConfig", "CLIPConfig", "TrainConfig", "PRESETS", "get_preset", "replace"]

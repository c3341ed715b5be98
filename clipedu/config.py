"""模型与训练配置：带注释的 dataclass 与预设（见第 5 章 sec-code-config）。"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

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
    arch: str = "transformer"                  # 文本塔："transformer"（OpenAI 因果 Transformer）或 "bert"（Chinese-CLIP）
    vocab_size: int = VOCAB_SIZE               # 词表大小，默认等于内置中文词表
    context_length: int = DEFAULT_CONTEXT_LENGTH  # 最大词元数（含 [SOS] 与 [EOS]）
    width: int = 128                           # 隐藏维度
    heads: int = 4                             # 注意力头数
    layers: int = 3                            # Transformer 层数
    mlp_ratio: float = 4.0                     # MLP 隐藏层倍数
    eos_token_id: int = EOS_ID                 # 在这个 id 第一次出现的位置取句向量（OpenAI 词表为 49407）
    # ---- 只有 arch="bert" 用（见第 6 章 sec-cnclip）----
    max_positions: int = 512                   # BERT 位置表的行数（可学习的绝对位置，≥ context_length）
    type_vocab_size: int = 2                   # 词元类型（句 A / 句 B）表的行数；CLIP 只用类型 0
    pad_token_id: int = 0                      # [PAD] 的 id：注意力掩码据此屏蔽补齐位置
    dropout: float = 0.0                       # BERT 的 dropout（Chinese-CLIP 训练时为 0.1）


@dataclass
class CLIPConfig:
    embed_dim: int = 128                                     # 共享嵌入空间的维度
    vision: VisionConfig = field(default_factory=VisionConfig)  # 图像塔
    text: TextConfig = field(default_factory=TextConfig)        # 文本塔
    quick_gelu: bool = False                                 # OpenAI 原版权重用 QuickGELU；新训练用 GELU
    init_logit_scale: float = math.log(1 / 0.07)             # logit_scale 初值 ln(1/τ)，τ=0.07
    max_logit_scale: float = math.log(100.0)                 # 每步优化后把 logit_scale 截断到 [0, ln 100]

    def to_dict(self) -> dict:
        """纯 Python 数据，可写进检查点（weights_only=True 可读）与 JSON。"""
        d = asdict(self)
        d["vision"]["layers"] = list(d["vision"]["layers"]) if isinstance(d["vision"]["layers"], (list, tuple)) else d["vision"]["layers"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        v = dict(d["vision"])
        if isinstance(v.get("layers"), list):
            v["layers"] = tuple(v["layers"])
        known_v = {f.name for f in fields(VisionConfig)}
        known_t = {f.name for f in fields(TextConfig)}
        known_c = {f.name for f in fields(cls)} - {"vision", "text"}
        unknown = (set(v) - known_v) | (set(d["text"]) - known_t) | (set(d) - known_c - {"vision", "text"})
        if unknown:
            raise ValueError(f"配置中有未知字段：{sorted(unknown)}")
        return cls(
            vision=VisionConfig(**v),
            text=TextConfig(**d["text"]),
            **{k: d[k] for k in known_c if k in d},
        )


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


def _cn_clip(embed_dim: int, vision: VisionConfig, text_layers: int, text_width: int = 768) -> CLIPConfig:
    """Chinese-CLIP 的形状：图像塔同 OpenAI（QuickGELU），文本塔是中文 RoBERTa-wwm（BERT 结构，词表 21128）。"""
    text = TextConfig(arch="bert", vocab_size=21128, context_length=52, width=text_width, heads=text_width // 64,
                      layers=text_layers, max_positions=512, type_vocab_size=2, pad_token_id=0, dropout=0.1)
    return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text, quick_gelu=True)


# Chinese-CLIP 发布的五个模型（cn_clip/clip/model_configs/*.json）；形状与参数量在 tests/test_cnclip_model.py 核对
PRESETS.update({
    # RN50 + RBT3（3 层 RoBERTa）
    "cn-clip-rn50": _cn_clip(1024, VisionConfig(arch="resnet", image_size=224, patch_size=0, width=64,
                                                layers=(3, 4, 6, 3), heads=32), text_layers=3),
    # ViT-B/16 + RoBERTa-wwm-ext-base（12 层）
    "cn-clip-vit-b-16": _cn_clip(512, VisionConfig(arch="vit", image_size=224, patch_size=16, width=768,
                                                   layers=12, heads=12), text_layers=12),
    # ViT-L/14 + RoBERTa-wwm-ext-base
    "cn-clip-vit-l-14": _cn_clip(768, VisionConfig(arch="vit", image_size=224, patch_size=14, width=1024,
                                                   layers=24, heads=16), text_layers=12),
    # ViT-L/14 @ 336 px
    "cn-clip-vit-l-14-336": _cn_clip(768, VisionConfig(arch="vit", image_size=336, patch_size=14, width=1024,
                                                       layers=24, heads=16), text_layers=12),
    # ViT-H/14（头宽 80：16 头）+ RoBERTa-wwm-ext-large（24 层、宽 1024）
    "cn-clip-vit-h-14": _cn_clip(1024, VisionConfig(arch="vit", image_size=224, patch_size=14, width=1280,
                                                    layers=32, heads=16), text_layers=24, text_width=1024),
})


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
    image_lr_mult: float = 1.0               # 图像塔（投影头除外）的学习率倍数；微调时常取 0.1（0 等于冻结）
    # ---- 保存、日志与评估 ----
    out_dir: str = "runs/tiny-cpu"           # 输出目录：last.pt、metrics.json、log.jsonl
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

    def model_config(self) -> CLIPConfig:
        return self.model if self.model is not None else get_preset(self.preset)


__all__ = ["VisionConfig", "TextConfig", "CLIPConfig", "TrainConfig", "PRESETS", "get_preset", "replace"]

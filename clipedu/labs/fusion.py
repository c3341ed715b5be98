"""三种多模态融合（早期 / 晚期 / 混合）与一个共用的小训练器（见第 2 章 sec-fusion-lab）。

任务是图形问答：输入图像与中文问题，输出答案 id。三个模型共用同样的"零件"
（图块嵌入、词元嵌入、Transformer 层），只在**在哪里、怎样把两种模态合到一起**上不同：

- ``EarlyFusion``：图块与词元拼成一条序列，进同一个 Transformer，模态从第一层就相互注意；
- ``LateFusion``：图像、文本各自编码成一个向量，最后才用 MLP 合并；
- ``HybridFusion``：图像先单独编码成图块特征，文本层里再用交叉注意力去"看"这些图块。

每个模型都拆成两段：``index_images(images)`` 是只依赖图像、可以离线预先算好的部分，
``answer(index, tokens)`` 是每个（图像, 问题）对在查询时必须算的部分。这样就能公平地量出
"1 个问题 × 1 万张图"的查询代价——也正是双塔 CLIP 能预建索引、而融合模型做不到的地方。
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..optim import adamw
from .parallel_fit import fit_in_threads
from ..tokenizer import PAD_ID, VOCAB_SIZE


@dataclass
class FusionConfig:
    image_size: int = 32        # 输入图像边长（像素）
    patch_size: int = 8         # 图块边长（卷积主干的总步长）；32/8 → 4×4 = 16 个图块
    width: int = 64             # 隐藏维度
    heads: int = 4              # 注意力头数
    layers: int = 2             # 每个 Transformer 的层数
    vocab_size: int = VOCAB_SIZE  # 词表大小（内置中文字表）
    context_length: int = 16    # 问题的最大词元数（含 [SOS]/[EOS]）
    num_answers: int = 14       # 答案个数（ShapesVQADataset.answers）


def _encoder(c: FusionConfig, layers: Optional[int] = None) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(c.width, c.heads, 4 * c.width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers or c.layers, enable_nested_tensor=False)


class PatchEmbed(nn.Module):
    """卷积主干把图像变成图块特征并加位置嵌入：(B, 3, H, W) → (B, N, D)，N = (H / patch_size)²。

    主干是 log2(patch_size) 个步长为 2 的 3×3 卷积，而不是 ViT 的一次性线性切块：
    在几千张小图、几百步的预算下，卷积的局部归纳偏置让三个融合模型都学得快得多。
    """

    def __init__(self, c: FusionConfig):
        super().__init__()
        n_down = c.patch_size.bit_length() - 1
        if c.patch_size < 2 or 2 ** n_down != c.patch_size or c.image_size % c.patch_size:
            raise ValueError(f"patch_size 应为 2 的幂且整除 image_size={c.image_size}，实际为 {c.patch_size}")
        self.image_size = c.image_size
        chans = [3] + [c.width // 2] * (n_down - 1) + [c.width]
        layers = []
        for i in range(n_down):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.GELU()]
        self.stem = nn.Sequential(*layers[:-1])  # 最后一层不加激活，输出即图块嵌入
        self.pos = nn.Parameter(0.02 * torch.randn((c.image_size // c.patch_size) ** 2, c.width))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, C, H, W = images.shape
        if (C, H, W) != (3, self.image_size, self.image_size):
            raise ValueError(f"图像形状应为 (B, 3, {self.image_size}, {self.image_size})，实际为 {tuple(images.shape)}；"
                             "请检查 FusionConfig.image_size")
        x = self.stem(images).flatten(2).transpose(1, 2)  # (B, N, D)
        return x + self.pos


class TextEmbed(nn.Module):
    """词元嵌入 + 位置嵌入，同时返回填充掩码（True = [PAD]，注意力应忽略）。"""

    def __init__(self, c: FusionConfig):
        super().__init__()
        self.context_length = c.context_length
        self.tok = nn.Embedding(c.vocab_size, c.width)
        self.pos = nn.Parameter(0.02 * torch.randn(c.context_length, c.width))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L = tokens.shape
        if L > self.context_length:
            raise ValueError(f"问题长度 {L} 超过 context_length={self.context_length}；请用 tokenizer(texts, context_length=...)")
        return self.tok(tokens) + self.pos[:L], tokens == PAD_ID  # (B, L, D), (B, L)


class _FusionBase(nn.Module):
    """共同接口：forward = answer(index_images(images), tokens)。"""

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.answer(self.index_images(images), tokens)

    @staticmethod
    def _broadcast(index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """一个问题对一批图：把 (1, L) 的 tokens 扩成 (B, L)。"""
        return tokens.expand(index.shape[0], -1) if tokens.shape[0] == 1 else tokens


class EarlyFusion(_FusionBase):
    """早期融合：[CLS] + 图块 + 词元进同一个 Transformer（见第 2 章 sec-fusion-lab）。"""

    def __init__(self, c: Optional[FusionConfig] = None):
        super().__init__()
        self.config = c = c or FusionConfig()
        self.patch, self.text = PatchEmbed(c), TextEmbed(c)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, c.width))
        self.type_emb = nn.Parameter(0.02 * torch.randn(2, c.width))  # 模态类型嵌入：0 图像，1 文本
        self.encoder, self.norm = _encoder(c), nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.num_answers)

    def index_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch(images) + self.type_emb[0]  # (B, N, D)：只有图块嵌入能预先算

    def answer(self, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, N, D = index.shape
        tokens = self._broadcast(index, tokens)
        txt, pad = self.text(tokens)
        cls = self.cls.expand(B, -1, -1)
        # (B, 1+N+L, D)
        x = torch.cat([cls, index, txt + self.type_emb[1]], dim=1)
        # [CLS] 与图块从不填充，只有文本部分可能是 [PAD]
        no_pad = torch.zeros(B, 1 + N, dtype=torch.bool, device=pad.device)
        mask = torch.cat([no_pad, pad], dim=1)
        # 整个 Transformer 都要对每个 (图, 问题) 对重算
        x = self.encoder(x, src_key_padding_mask=mask)
        return self.head(self.norm(x[:, 0]))  # (B, num_answers)


class LateFusion(_FusionBase):
    """晚期融合：两个独立编码器各出一个向量，最后拼接 [v, q, v⊙q] 过 MLP（见第 2 章 sec-fusion-lab）。"""

    def __init__(self, c: Optional[FusionConfig] = None):
        super().__init__()
        self.config = c = c or FusionConfig()
        self.patch, self.text = PatchEmbed(c), TextEmbed(c)
        self.img_enc, self.txt_enc = _encoder(c), _encoder(c)
        self.img_norm, self.txt_norm = nn.LayerNorm(c.width), nn.LayerNorm(c.width)
        self.head = nn.Sequential(nn.Linear(3 * c.width, 2 * c.width), nn.GELU(), nn.Linear(2 * c.width, c.num_answers))

    def index_images(self, images: torch.Tensor) -> torch.Tensor:
        x = self.img_enc(self.patch(images))  # (B, N, D)
        return self.img_norm(x.mean(dim=1))  # (B, D)：每张图一个向量，可离线建索引

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        x, pad = self.text(tokens)
        x = self.txt_enc(x, src_key_padding_mask=pad)  # (B, L, D)
        return self.txt_norm(x[:, 0])  # 双向编码器：取 [SOS] 位置当句向量

    def answer(self, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, D = index.shape
        q = self.encode_text(tokens)  # 只对不同的问题编码一次，(1 或 B, D)
        q = q.expand(B, -1) if q.shape[0] == 1 else q
        return self.head(torch.cat([index, q, index * q], dim=-1))  # (B, num_answers)


class HybridFusion(_FusionBase):
    """混合融合：图像单独编码成图块特征；文本层先自注意力、再交叉注意力看图块（见第 2 章 sec-fusion-lab）。"""

    def __init__(self, c: Optional[FusionConfig] = None):
        super().__init__()
        self.config = c = c or FusionConfig()
        self.patch, self.text = PatchEmbed(c), TextEmbed(c)
        self.img_enc, self.img_norm = _encoder(c), nn.LayerNorm(c.width)
        layer = nn.TransformerDecoderLayer(c.width, c.heads, 4 * c.width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.cross = nn.TransformerDecoder(layer, c.layers)  # 每层：自注意力 → 交叉注意力（Q=文本，K/V=图块）→ MLP
        self.norm, self.head = nn.LayerNorm(c.width), nn.Linear(c.width, c.num_answers)

    def index_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.img_norm(self.img_enc(self.patch(images)))  # (B, N, D)：图块特征可离线算好

    def answer(self, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, N, D = index.shape
        tokens = self._broadcast(index, tokens)
        txt, pad = self.text(tokens)  # (B, L, D)
        x = self.cross(txt, index, tgt_key_padding_mask=pad)  # 交叉注意力必须逐对计算
        return self.head(self.norm(x[:, 0]))  # (B, num_answers)


class TextOnlyBaseline(_FusionBase):
    """只看问题、不看图的基线：在答案均衡的数据上只能达到随机水平（见第 2 章 sec-fusion-lab）。"""

    def __init__(self, c: Optional[FusionConfig] = None):
        super().__init__()
        self.config = c = c or FusionConfig()
        self.text, self.txt_enc = TextEmbed(c), _encoder(c)
        self.norm, self.head = nn.LayerNorm(c.width), nn.Linear(c.width, c.num_answers)

    def index_images(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(images.shape[0], 0)  # 图像被丢弃

    def answer(self, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self._broadcast(index, tokens)
        x, pad = self.text(tokens)
        return self.head(self.norm(self.txt_enc(x, src_key_padding_mask=pad)[:, 0]))


FUSION_MODELS = {"early": EarlyFusion, "late": LateFusion, "hybrid": HybridFusion, "text-only": TextOnlyBaseline}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def vqa_tensors(dataset, tokenizer, context_length: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """把整个 ShapesVQADataset 一次取成张量：(图像 [N,3,H,W], 问题词元 [N,L], 答案 [N])。"""
    images, questions, answers = dataset.get_batch(range(len(dataset)))
    return images, tokenizer(questions, context_length=context_length), answers


def fit_classifier(
    model: nn.Module, inputs: Sequence[torch.Tensor], labels: torch.Tensor, *,
    steps: int = 500, batch_size: int = 128, lr: float = 1e-3,
    weight_decay: float = 0.01, time_budget: Optional[float] = None,
    seed: int = 0, device=None, stop: Optional[threading.Event] = None,
) -> list[dict]:
    """共用的小训练器：交叉熵 + AdamW + 预热后余弦衰减。

    约定 ``model(*inputs[idx]) -> logits``。每步随机抽一批下标
    （只用本函数自己的生成器）；``time_budget``（秒）到了、或 ``stop``
    被设置就提前停。返回逐步的 {step, loss, acc, time, cpu}：``time`` 是
    墙钟秒数，``cpu`` 是本线程用掉的 CPU 秒数（算子内只用 1 个线程时，
    它就是训练的全部计算，不受别的进程抢占影响）。
    """
    if device is not None:
        device = torch.device(device)
    else:
        device = next(model.parameters()).device
    if any(x.shape[0] != labels.shape[0] for x in inputs):
        sizes = [x.shape[0] for x in inputs]
        raise ValueError(
            f"inputs 与 labels 的样本数应相同，实际为 {sizes} 与 {labels.shape[0]}"
        )
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("模型没有可训练的参数 / no trainable parameters")
    opt = adamw(params, params[0].device, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    # 线性预热 warmup 步，再余弦衰减到 0
    lr_at = lambda s: (
        min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    history, start, start_cpu = [], time.perf_counter(), time.thread_time()
    for step in range(steps):
        if stop is not None and stop.is_set():
            break
        idx = torch.randint(0, labels.shape[0], (batch_size,), generator=g)
        logits = model(*[x[idx].to(device) for x in inputs])
        y = labels[idx].to(device)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        elapsed = time.perf_counter() - start
        acc = (logits.argmax(-1) == y).float().mean().item()
        history.append(
            {"step": step + 1, "loss": loss.item(), "acc": acc, "time": elapsed,
             "cpu": time.thread_time() - start_cpu}
        )
        if time_budget is not None and elapsed >= time_budget:
            break
    model.eval()
    return history


def fit_classifiers(
    models: dict[str, nn.Module], inputs: Sequence[torch.Tensor], labels: torch.Tensor, *,
    max_workers: Optional[int] = None, **kwargs,
) -> dict[str, list[dict]]:
    """用 ``fit_classifier`` 同时训练几个互不相干的模型，返回 {名字: 逐步记录}。

    模型都在 CPU 上时，每个模型一个线程（至多 ``max_workers`` 个）、每个线程 1 个算子内线程
    （见 ``parallel_fit.fit_in_threads``）；结果与逐个在 1 个线程上训练逐位相同。
    模型在 GPU 上时逐个训练。其余参数原样传给 ``fit_classifier``。
    """
    seen: set[int] = set()
    for name, m in models.items():
        ids = {id(p) for p in m.parameters()}
        if ids & seen:  # 两个线程同时改同一组参数会互相覆盖
            raise ValueError(f"模型 {name!r} 与前面的模型共用参数，不能同时训练 / models share parameters")
        seen |= ids
    on_cpu = all(p.device.type == "cpu" for m in models.values() for p in m.parameters())
    if not on_cpu:
        return {name: fit_classifier(m, inputs, labels, **kwargs) for name, m in models.items()}
    jobs = {
        name: (lambda stop, m=m: fit_classifier(m, inputs, labels, stop=stop, **kwargs))
        for name, m in models.items()
    }
    return fit_in_threads(jobs, max_workers=max_workers)


@torch.no_grad()
def predict(model: nn.Module, inputs: Sequence[torch.Tensor], batch_size: int = 512, device=None) -> torch.Tensor:
    """分批前向，返回预测的类别 id（在 CPU 上）。"""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    n = inputs[0].shape[0]
    out = [model(*[x[i:i + batch_size].to(device) for x in inputs]).argmax(-1).cpu() for i in range(0, n, batch_size)]
    return torch.cat(out)


def query_cost(model: _FusionBase, images: torch.Tensor, tokens: torch.Tensor, batch_size: int = 1024) -> dict:
    """1 个问题对一批图的代价：离线建索引的时间，与有索引后每次查询的时间和浮点运算数（GFLOPs）。"""
    if tokens.shape[0] != 1:
        raise ValueError(f"query_cost 只接受一个问题，tokens 形状应为 (1, L)，实际为 {tuple(tokens.shape)}")
    model.eval()
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    with torch.no_grad():
        t0 = time.perf_counter()
        index = torch.cat([model.index_images(images[i:i + batch_size].to(device))
                           for i in range(0, len(images), batch_size)])
        t1 = time.perf_counter()
        for i in range(0, len(index), batch_size):
            model.answer(index[i:i + batch_size], tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
    return {"index_seconds": t1 - t0, "query_seconds": t2 - t1,
            "query_gflops": query_flops(model, index[:batch_size], tokens) * len(index) / min(len(index), batch_size) / 1e9}


def query_flops(model: _FusionBase, index: torch.Tensor, tokens: torch.Tensor) -> int:
    """``answer(index, tokens)`` 的浮点运算数（乘加各算一次）。

    在开着梯度的模式下计数：推理时 PyTorch 会把整层 Transformer 换成一个融合算子（fast path），
    FlopCounterMode 数不到它里面的矩阵乘。
    """
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.enable_grad():
        model.answer(index, tokens)
    return counter.get_total_flops()


__all__ = [
    "FusionConfig", "EarlyFusion", "LateFusion", "HybridFusion", "TextOnlyBaseline", "FUSION_MODELS",
    "PatchEmbed", "TextEmbed", "num_params", "vqa_tensors", "fit_classifier", "fit_classifiers",
    "predict", "query_cost", "query_flops",
]

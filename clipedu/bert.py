"""BERT 文本塔与 Chinese-CLIP 模型（见第 6 章 sec-cnclip）。

Chinese-CLIP 的图像塔与 OpenAI CLIP 相同（ViT 或 ModifiedResNet），文本塔换成
中文 RoBERTa-wwm，结构就是 BERT。与 ``model.py`` 里的因果文本 Transformer 相比，
有五处不同：

1. **双向注意力**：每个词元看整句，只屏蔽 ``[PAD]``（因果塔只看左边）；
2. **后置 LayerNorm（post-LN）**：``x = LN(x + attn(x))``，而不是 ``x + attn(LN(x))``；
3. **嵌入**：词嵌入 + 可学习的绝对位置（512 行）+ 词元类型（句 A/句 B），
   相加后先做一次 LayerNorm；
4. **GELU** 用 erf 精确式（图像塔仍是 QuickGELU）；
5. **在 [CLS] 处取句向量**（位置 0），而不是在 [EOS] 处。

参数名与 Chinese-CLIP 完全一致（``bert.embeddings.word_embeddings.weight``、
``bert.encoder.layer.0.attention.self.query.weight`` …、``text_projection``），
加载权重只是按键名复制。
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import TextConfig
from .model import LayerNorm, TextTransformer

BERT_LN_EPS = 1e-12  # BERT 的 LayerNorm ε（OpenAI CLIP 用 PyTorch 默认的 1e-5）


class BertEmbeddings(nn.Module):
    """词嵌入 + 位置嵌入 + 词元类型嵌入，相加后 LayerNorm。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        # padding_idx：[PAD] 那一行不接收梯度（与 Chinese-CLIP 相同）
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.width,
                                            padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.width)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.width)
        self.LayerNorm = LayerNorm(cfg.width, eps=BERT_LN_EPS)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, L = tokens.shape
        positions = torch.arange(L, device=tokens.device)  # (L,)
        # CLIP 只有一句话，词元类型全是 0：直接取第 0 行，省去一次查表
        x = (self.word_embeddings(tokens) + self.position_embeddings(positions)
             + self.token_type_embeddings.weight[0])
        return self.dropout(self.LayerNorm(x))  # (B, L, width)


class BertSelfAttention(nn.Module):
    """多头自注意力，Q、K、V 各是一个 Linear。

    这是 BERT 的布局；OpenAI 把三者叠成一个 in_proj。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.width % cfg.heads != 0:
            raise ValueError(f"BERT 的 width={cfg.width} 应能被 heads={cfg.heads} 整除"
                             f" / width must be divisible by heads")
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.query = nn.Linear(cfg.width, cfg.width)
        self.key = nn.Linear(cfg.width, cfg.width)
        self.value = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        # q、k、v 各 (B, heads, L, d_head)
        q, k, v = (proj(x).view(B, L, self.heads, D // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        # keep: (B, 1, 1, L)，True 的键参与注意力；[PAD] 位置被屏蔽
        # （每行至少有 [CLS]，不会全被屏蔽）
        p_drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p_drop)
        # y: (B, heads, L, d_head)
        return y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)


class BertSelfOutput(nn.Module):
    """注意力输出投影，再做后置 LayerNorm：LN(x + dense(y))。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.width, cfg.width)
        self.LayerNorm = LayerNorm(cfg.width, eps=BERT_LN_EPS)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(self.dense(y)))


class BertAttention(nn.Module):
    """``attention.self``（注意力本身）+ ``attention.output``（投影与残差 LN）。

    键名跟着这个两层结构走。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class BertIntermediate(nn.Module):
    """前馈网络的第一层：width → mlp_ratio·width，接精确 GELU。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.width, int(cfg.width * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertOutput(nn.Module):
    """前馈网络的第二层，再做后置 LayerNorm：LN(x + dense(h))。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(int(cfg.width * cfg.mlp_ratio), cfg.width)
        self.LayerNorm = LayerNorm(cfg.width, eps=BERT_LN_EPS)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(self.dense(h)))


class BertLayer(nn.Module):
    """一个 post-LN 编码层：x = LN(x + attn(x))，再 x = LN(x + ffn(x))。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.grad_checkpointing = False
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.layers)])

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, keep, use_reentrant=False)
            else:
                x = layer(x, keep)
        return x


class BertModel(nn.Module):
    """嵌入 + 编码器；返回每个位置的隐藏状态 (B, L, width)。

    没有 pooler：CLIP 直接取 [CLS] 位置。"""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.pad_token_id = cfg.pad_token_id
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.init_weights()

    def init_weights(self) -> None:
        """BERT 的初始化：Linear 与嵌入 N(0, 0.02)，偏置 0（LayerNorm 保持 1 与 0）。"""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, L = tokens.shape
        # (B, 1, 1, L)：对所有头、所有查询广播
        keep = (tokens != self.pad_token_id).view(B, 1, 1, L)
        return self.encoder(self.embeddings(tokens), keep)  # (B, L, width)


class BertTextTower(nn.Module):
    """Chinese-CLIP 的文本塔：BERT 编码器 ``bert`` + 投影 ``text_projection``。

    ``model.build_text`` 在 ``config.text.arch == "bert"`` 时建它；``CLIP`` 把子模块
    ``bert`` 与参数 ``text_projection`` 挂到顶层，state_dict 的键名与
    Chinese-CLIP 一致。
    """

    def __init__(self, cfg: TextConfig, embed_dim: int):
        super().__init__()
        if cfg.context_length > cfg.max_positions:
            raise ValueError(f"context_length={cfg.context_length} 超过 BERT 位置表的 "
                             f"{cfg.max_positions} 行"
                             f" / context longer than max_positions")
        self.context_length, self.vocab_size = cfg.context_length, cfg.vocab_size
        self.bert = BertModel(cfg)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.text_projection, std=cfg.width ** -0.5)

    # 输入检查与因果塔相同（类型、dtype、形状、长度）
    check_tokens = TextTransformer.check_tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """词元 [B, L] → 特征 [B, embed_dim]：取 [CLS]（位置 0）的隐藏状态再投影。"""
        self.check_tokens(tokens)
        return self.bert(tokens)[:, 0] @ self.text_projection  # (B, embed_dim)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.bert.encoder.grad_checkpointing = enable


def is_bert_clip(model: nn.Module) -> bool:
    """模型是不是 BERT 文本塔的 CLIP（Chinese-CLIP 结构）。"""
    return isinstance(getattr(model, "text_tower", None), BertTextTower)


__all__ = ["BertEmbeddings", "BertLayer", "BertModel", "BertTextTower", "is_bert_clip"]

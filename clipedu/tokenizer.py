"""中文字符级分词器 ChineseTokenizer（见第 3 章 sec-step-data、第 5 章 sec-code-tokenizer）。

词表完全由代码生成，不下载任何文件，在每台机器上都相同：

- 4 个特殊符号：``[PAD]``=0、``[UNK]``=1、``[SOS]``=2、``[EOS]``=3；
- 可打印 ASCII（0x20–0x7E，共 95 个）；
- 常用中文标点与符号（全角标点经 NFKC 后大多变成 ASCII，这里只列 NFKC 后仍存在的）；
- GB2312 一级、二级汉字共 6,763 个，按 GB2312 编码顺序排列。

一个汉字就是一个词元（token）。字符级切分对 CLIP 的短标题足够好，且没有分词歧义，
Chinese-CLIP 的 BERT 词表对汉字也基本按字切分。
"""
from __future__ import annotations

import unicodedata
from typing import Iterable, Sequence

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SOS]", "[EOS]")
PAD_ID, UNK_ID, SOS_ID, EOS_ID = 0, 1, 2, 3

# NFKC 之后仍保留为全角/中文形式的常用标点与符号。
_CJK_PUNCT = "。、“”‘’《》〈〉「」『』【】〔〕…—～·￥〇"


def _gb2312_hanzi() -> list[str]:
    """按 GB2312 区位顺序生成全部 6,763 个汉字（第 16–87 区）。"""
    chars = []
    for row in range(0xB0, 0xF8):
        for col in range(0xA1, 0xFF):
            try:
                chars.append(bytes([row, col]).decode("gb2312"))
            except UnicodeDecodeError:  # 第 55 区末尾 5 个空位
                continue
    return chars


def build_vocab() -> list[str]:
    """生成固定词表（列表下标即 id）。"""
    vocab = list(SPECIAL_TOKENS)
    vocab += [chr(c) for c in range(0x20, 0x7F)]
    vocab += [c for c in _CJK_PUNCT if c not in vocab]
    vocab += [c for c in _gb2312_hanzi() if c not in vocab]
    return vocab


VOCAB = build_vocab()
VOCAB_SIZE = len(VOCAB)
DEFAULT_CONTEXT_LENGTH = 32


def check_context_length(context_length: int, first: str, last: str) -> int:
    """两种分词器共用：序列至少放得下首尾两个特殊词元 first 与 last。"""
    if not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length 至少为 2（需要容纳 {first} 和 {last}），"
                         f"实际为 {context_length!r}")
    return context_length


class ChineseTokenizer:
    """字符级中文分词器：``tok(texts) -> LongTensor[B, L]``。

    每条文本编码为 ``[SOS] 字 字 … [EOS] [PAD] …``。过长时截断正文，但始终保留 ``[EOS]``，
    因为文本塔在 ``[EOS]`` 位置取句向量。
    """

    def __init__(self, vocab: Sequence[str] | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.vocab = list(VOCAB if vocab is None else vocab)
        if self.vocab[:4] != list(SPECIAL_TOKENS):
            raise ValueError(f"词表前 4 项应为 {SPECIAL_TOKENS}，实际为 {self.vocab[:4]}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("词表中有重复的词元 / vocabulary has duplicate tokens")
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.context_length = self._check_context_length(context_length)
        self.pad_id, self.unk_id, self.sos_id, self.eos_id = PAD_ID, UNK_ID, SOS_ID, EOS_ID

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @staticmethod
    def _check_context_length(context_length: int) -> int:
        return check_context_length(context_length, "[SOS]", "[EOS]")

    @staticmethod
    def normalize(text: str) -> str:
        """NFKC 归一化：全角字母数字与标点变半角，兼容字符变标准字符。"""
        return unicodedata.normalize("NFKC", text)

    def encode(self, text: str) -> list[int]:
        """把一条文本变成 id 列表（不含 [SOS]/[EOS]）。未登录字符记为 [UNK]。"""
        if not isinstance(text, str):
            raise TypeError(f"标题应为 str，实际为 {type(text).__name__}: {text!r}")
        return [self.token_to_id.get(ch, UNK_ID) for ch in self.normalize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """把 id 序列还原为文本，跳过 [PAD]/[SOS]，在 [EOS] 处停止。"""
        out = []
        for i in (int(x) for x in ids):
            if i == EOS_ID:
                break
            if i in (PAD_ID, SOS_ID):
                continue
            out.append(self.vocab[i] if 0 <= i < len(self.vocab) else "[UNK]")
        return "".join(out)

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None
    ) -> torch.Tensor:
        """批量编码，返回 ``LongTensor[B, L]``，L 为 context_length。"""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            got = type(texts).__name__
            raise TypeError(f"texts 应为 str 或 str 列表，实际为 {got}")
        if context_length is None:
            context_length = self.context_length
        L = self._check_context_length(context_length)
        out = torch.full((len(texts), L), PAD_ID, dtype=torch.long)
        for b, text in enumerate(texts):
            # 截断正文，保留 [EOS]
            ids = [SOS_ID] + self.encode(text)[: L - 2] + [EOS_ID]
            out[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    @staticmethod
    def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
        """去掉每一行都是 [PAD] 的尾部列，至少保留 2 列。

        文本塔是因果注意力并在 [EOS] 处取句向量，[EOS] 之后的位置既不被它看到、也不影响结果，
        所以截掉它们输出不变，却省下大半计算（几何图形世界的标题平均 12 个字，上下文是 32）。
        形状随批变化，所以 torch.compile 时不用它。
        """
        keep = int((tokens != PAD_ID).any(dim=0).nonzero().max().item()) + 1 if tokens.numel() else 2
        return tokens[:, : max(keep, 2)]

    # ---- 与检查点一起保存 / 恢复 ----
    def state_dict(self) -> dict:
        """可放进 ``torch.save`` 且能被 ``weights_only=True`` 读回的纯数据。"""
        return {"type": "ChineseTokenizer", "vocab": list(self.vocab), "context_length": self.context_length}

    @classmethod
    def from_state_dict(cls, state: dict) -> "ChineseTokenizer":
        if not isinstance(state, dict) or state.get("type") != "ChineseTokenizer":
            raise ValueError(f"不是 ChineseTokenizer 的状态：{str(state)[:80]}")
        return cls(vocab=state["vocab"], context_length=int(state["context_length"]))

    def __repr__(self) -> str:
        return f"ChineseTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"

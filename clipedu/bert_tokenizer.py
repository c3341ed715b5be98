"""BERT 的 WordPiece 分词器，中文 BERT / Chinese-CLIP 用的那一个。

见第 6 章 sec-cnclip。

和 ``ChineseTokenizer``（一个汉字一个词元）不同，WordPiece 的词表里既有单个汉字，
也有英文词和词片（``##ing`` 这样以 ``##`` 开头、只能接在前一片后面的片段）。分词分两步：

1. 基本分词（basic tokenizer）：清理控制字符、把空白统一成空格；在每个汉字两边加空格，
   让每个汉字单独成词；按空白切开；小写并去掉重音；再把标点切成单独的词。
2. WordPiece：对每个词做“贪心最长匹配”：从词首开始，找词表里最长的前缀，切下它，
   剩下的部分加上 ``##`` 继续找；某一步一个字符也匹配不上，整个词就记作 ``[UNK]``。

最后加上 ``[CLS] … [SEP]``，截断到 ``context_length``，用 ``[PAD]``（id 0）补齐。
每一步都与 Chinese-CLIP（``cn_clip.clip.tokenize``）逐字相同，测试在大量生成的
文本上核对 id。
词表（21128 个词元）只从本地文件读：默认是已安装的 ``cn_clip`` 包自带的 ``vocab.txt``。
"""
from __future__ import annotations

import importlib.util
import os
import unicodedata
from typing import TYPE_CHECKING, Iterable, Sequence

# torch 只在返回张量时才导入：ONNX 服务（sec-service）用下面的纯 Python
# 函数分词，不需要 torch
if TYPE_CHECKING:
    import torch

DEFAULT_CONTEXT_LENGTH = 52  # Chinese-CLIP 所有发布模型的文本长度
MAX_CHARS_PER_WORD = 200      # 比这更长的“词”（如一长串无空格的字母）直接记作 [UNK]


def default_vocab_file() -> str:
    """已安装的 cn_clip 包里的 vocab.txt 路径（只找文件，不导入 cn_clip）。"""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "找不到 BERT 中文词表 vocab.txt：请 pip install cn_clip"
            "（词表随包安装，不联网），或把 Chinese-CLIP / chinese-roberta-wwm-ext 的 "
            "vocab.txt 放到本地，再传 "
            "BertChineseTokenizer(vocab_file='path/to/vocab.txt')"
            " / BERT vocab.txt not found"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "clip", "vocab.txt")


def read_vocab(vocab_file: str) -> list[str]:
    """一行一个词元；行号就是 id。"""
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(
            f"找不到词表文件 {vocab_file!r}；请 pip install cn_clip，或给出本地 "
            f"vocab.txt 的路径 / vocab file not found"
        )
    with open(vocab_file, encoding="utf-8") as f:
        return [line.strip() for line in f]


# ---------------------------------------------------------------- 字符类别
def is_whitespace(ch: str) -> bool:
    """空格、制表、换行与 Unicode 的“空格分隔符”（Zs，如全角空格 U+3000）。"""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """控制字符（Cc）与格式字符（Cf，如零宽空格 U+200B）。

    制表与换行算空白，不算控制。"""
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def is_punctuation(ch: str) -> bool:
    """ASCII 里所有非字母数字的可见符号（含 $ + < = > ^ ` | ~），
    以及 Unicode 的标点（P*）。"""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


# 中文 BERT 认定的“汉字”码位：CJK 统一表意文字及其扩展 A–E、兼容表意文字
# （不含假名、谚文）
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
               (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
               (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


# ---------------------------------------------------------------- 第 1 步：基本分词
def clean_text(text: str) -> str:
    """删掉 NUL、替换字符 U+FFFD 和控制/格式字符；各种空白都换成一个普通空格。"""
    out = []
    for ch in text:
        if ch in "\x00\ufffd" or is_control(ch):
            continue
        out.append(" " if is_whitespace(ch) else ch)
    return "".join(out)


def strip_accents(word: str) -> str:
    """NFD 分解后去掉组合附加符号（Mn）：café → cafe。"""
    return "".join(ch for ch in unicodedata.normalize("NFD", word)
                   if unicodedata.category(ch) != "Mn")


def split_punctuation(word: str) -> list[str]:
    """每个标点单独成词：'hello,world!' → ['hello', ',', 'world', '!']。"""
    pieces: list[str] = []
    start_new = True
    for ch in word:
        if is_punctuation(ch):
            pieces.append(ch)
            start_new = True
        else:
            if start_new:
                pieces.append("")
            pieces[-1] += ch
            start_new = False
    return pieces


def basic_tokenize(text: str, lower_case: bool = True) -> list[str]:
    """清理 → 汉字两边加空格 → 按空白切 → 小写、去重音 → 切出标点。"""
    text = clean_text(text)
    text = "".join(f" {ch} " if is_cjk(ch) else ch for ch in text)
    words: list[str] = []
    # str.split() 还会在 U+2028 等 Python 认定的空白处切开；与原版一致，
    # 这里不用 split(" ")
    for word in text.split():
        if lower_case:
            word = strip_accents(word.lower())
        words.extend(split_punctuation(word))
    return " ".join(words).split()  # 去掉去重音后变空的词


# ---------------------------------------------------------------- 第 2 步：WordPiece
def wordpiece(word: str, vocab: dict[str, int], unk: str = "[UNK]") -> list[str]:
    """贪心最长匹配：'unaffable' → ['un', '##aff', '##able']。

    有一段匹配不上就整个词记作 [UNK]。"""
    if len(word) > MAX_CHARS_PER_WORD:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:  # 连一个字符都不在词表里
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


class BertChineseTokenizer:
    """中文 BERT 的 WordPiece 分词器：``tok(texts) -> LongTensor[B, context_length]``。

    见第 6 章 sec-cnclip。``vocab_file`` 缺省时读已安装的 cn_clip 包自带的
    vocab.txt；也可以直接给 ``vocab``（词元列表）。
    """

    def __init__(self, vocab_file: str | None = None,
                 context_length: int = DEFAULT_CONTEXT_LENGTH,
                 vocab: Sequence[str] | None = None, lower_case: bool = True):
        if vocab is not None:
            tokens = list(vocab)
        else:
            tokens = read_vocab(vocab_file or default_vocab_file())
        self.vocab = tokens
        # 重复的词元以后出现的为准（同原版）
        self.token_to_id = {tok: i for i, tok in enumerate(tokens)}
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
                   if t not in self.token_to_id]
        if missing:
            raise ValueError(f"词表里缺少特殊词元 {missing}；这不是 BERT 的 vocab.txt"
                             f" / not a BERT vocab")
        self.pad_id, self.unk_id = self.token_to_id["[PAD]"], self.token_to_id["[UNK]"]
        self.cls_id, self.sep_id = self.token_to_id["[CLS]"], self.token_to_id["[SEP]"]
        self.lower_case = bool(lower_case)
        self.context_length = self._check_context_length(context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @staticmethod
    def _check_context_length(context_length: int) -> int:
        from .tokenizer import check_context_length

        return check_context_length(context_length, "[CLS]", "[SEP]")

    def tokenize(self, text: str) -> list[str]:
        """文本 → 词元字符串列表（不含 [CLS]/[SEP]）。"""
        if not isinstance(text, str):
            raise TypeError(f"text 应为 str，实际为 {type(text).__name__}")
        return [p for w in basic_tokenize(text, self.lower_case)
                for p in wordpiece(w, self.token_to_id)]

    def encode(self, text: str) -> list[int]:
        """文本 → id 列表（不含 [CLS]/[SEP]，不截断）。"""
        return [self.token_to_id[t] for t in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """id → 文本：去掉特殊词元，把 ##词片 接回前一片；汉字之间不加空格。"""
        special = {self.pad_id, self.cls_id, self.sep_id}
        out = ""
        for i in (int(i) for i in ids):
            if i in special:
                continue
            tok = self.vocab[i] if 0 <= i < len(self.vocab) else "[UNK]"
            if tok.startswith("##"):
                out += tok[2:]
            elif out and tok and not (is_cjk(tok[0]) or is_cjk(out[-1])):
                out += " " + tok
            else:
                out += tok
        return out

    def __call__(self, texts: str | Sequence[str],
                 context_length: int | None = None) -> torch.Tensor:
        """批量编码：``[CLS] 正文（截断到 L-2） [SEP] [PAD]…``。

        返回 ``LongTensor[B, L]``。"""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts 应为 str 或 str 列表，"
                            f"实际为 {type(texts).__name__}")
        if context_length is None:
            context_length = self.context_length
        import torch

        L = self._check_context_length(context_length)
        out = torch.full((len(texts), L), self.pad_id, dtype=torch.long)
        for b, text in enumerate(texts):
            ids = [self.cls_id] + self.encode(text)[: L - 2] + [self.sep_id]
            out[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def trim_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """去掉每一行都是 [PAD] 的尾部列（至少留 2 列）。

        BERT 塔用 [PAD] 掩码，截掉它们结果不变。"""
        keep = 2
        if tokens.numel():
            keep = int((tokens != self.pad_id).any(dim=0).nonzero().max().item()) + 1
        return tokens[:, : max(keep, 2)]

    # ---- 与检查点一起保存 / 恢复 ----
    # 词表是字符串列表，weights_only=True 可读，不用 pickle
    def state_dict(self) -> dict:
        return {"type": "BertChineseTokenizer", "vocab": list(self.vocab),
                "context_length": self.context_length, "lower_case": self.lower_case}

    @classmethod
    def from_state_dict(cls, state: dict) -> "BertChineseTokenizer":
        if not isinstance(state, dict) or state.get("type") != "BertChineseTokenizer":
            raise ValueError(f"不是 BertChineseTokenizer 的状态：{str(state)[:80]}")
        return cls(vocab=state["vocab"], context_length=int(state["context_length"]),
                   lower_case=bool(state.get("lower_case", True)))

    def __repr__(self) -> str:
        return (f"BertChineseTokenizer(vocab_size={self.vocab_size}, "
                f"context_length={self.context_length})")


def tokenizer_from_state_dict(state: dict):
    """按 ``state["type"]`` 还原检查点里的分词器。

    ChineseTokenizer 或 BertChineseTokenizer。"""
    if isinstance(state, dict) and state.get("type") == "BertChineseTokenizer":
        return BertChineseTokenizer.from_state_dict(state)
    from .tokenizer import ChineseTokenizer
    return ChineseTokenizer.from_state_dict(state)


__all__ = ["BertChineseTokenizer", "basic_tokenize", "wordpiece", "default_vocab_file",
           "read_vocab", "tokenizer_from_state_dict"]

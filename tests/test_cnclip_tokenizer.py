"""BertChineseTokenizer 与 Chinese-CLIP 的 ``cn_clip.clip.tokenize`` 逐 id 相同（见第 6 章 sec-cnclip）。"""
import random

import pytest
import torch

import cn_clip.clip as cn
from clipedu.bert_tokenizer import (BertChineseTokenizer, basic_tokenize, default_vocab_file, tokenizer_from_state_dict,
                                    wordpiece)
from clipedu.tokenizer import ChineseTokenizer


@pytest.fixture(scope="module")
def tok():
    return BertChineseTokenizer()


# 每一类字符一个池子：生成的句子从这些池子里随机取片段拼起来
POOLS = {
    "chinese": list("一张猫狗的照片在草地上奔跑红色汽车停路边天空中有白云我们你好世界龘齉鬱"),
    "cjk_rare": ["\u3400", "\u4dbf", "\U00020000", "\U0002a6df", "\U0002b740", "\uf900", "\U0002f800", "\u9fff"],
    "english": ["the", "cat", "running", "unaffable", "Photo", "OF", "a", "DOG", "xylophone", "qzxv", "CLIP",
                "supercalifragilistic", "don't", "e-mail", "U.S.A."],
    "digits": list("0123456789") + ["2024", "3.14", "1,000", "007"],
    "fullwidth": [chr(c) for c in range(0xFF01, 0xFF5F, 3)] + ["\u3000"],
    "punctuation": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("，。、；：？！“”‘’（）《》【】…—·「」"),
    "emoji": ["😀", "🐱", "👍🏽", "👨\u200d👩\u200d👧", "🇨🇳", "❤️", "🎉"],
    "accents": ["café", "naïve", "Ångström", "résumé", "e\u0301", "İstanbul", "ǅ", "ß", "ﬁ", "Ⅻ", "ḱ"],
    "control": ["\x00", "\x07", "\x1b", "\x1f", "\x7f", "\x85", "\ufffd", "\x0b", "\x0c"],
    "zero_width": ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e"],
    "whitespace": [" ", "\t", "\n", "\r", "\u00a0", "\u2028", "\u2029", "\u3000", "\u2003", "\x1c"],
    "other_scripts": ["ありがとう", "カタカナ", "한국어", "Привет", "Ελληνικά", "مرحبا", "עברית", "हिन्दी", "ไทย"],
}


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = sorted(POOLS)
    texts = ["", " ", "\u200b", "\x00\x00", "a" * 201, "a" * 200, "猫" * 100, "hello" * 60]
    for _ in range(n):
        k = rng.randint(1, 30)
        texts.append("".join(rng.choice(POOLS[rng.choice(names)]) + rng.choice(["", " ", ""]) for _ in range(k)))
    # 再加上随机码位：覆盖池子之外的字符
    for _ in range(n // 4):
        texts.append("".join(chr(rng.choice([rng.randint(0x20, 0x2FFF), rng.randint(0x3000, 0xFFFF),
                                             rng.randint(0x10000, 0x2FFFF)])) for _ in range(rng.randint(1, 20))))
    return texts


def test_default_vocab_comes_from_installed_cn_clip(tok):
    assert default_vocab_file().endswith("vocab.txt")
    assert tok.vocab_size == len(cn._tokenizer.vocab) == 21128
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == tuple(cn._tokenizer.vocab[t] for t in
                                                                     ("[PAD]", "[UNK]", "[CLS]", "[SEP]"))


def _check_corpus(tok, n: int, context_length: int, seed: int) -> None:
    texts = make_corpus(n, seed=seed)
    # 语料里确实有每一类字符
    joined = "".join(texts)
    for name, pool in POOLS.items():
        assert any(p in joined for p in pool), name
    mine = tok(texts, context_length=context_length)
    ref = cn.tokenize(texts, context_length=context_length)
    bad = [texts[i] for i in range(len(texts)) if not torch.equal(mine[i], ref[i])]
    assert not bad, f"{len(bad)} 条不一致，例如 {bad[:3]!r}"
    assert mine.shape == (len(texts), context_length) and mine.dtype == torch.long


@pytest.mark.parametrize("context_length", [52, 16, 2])
def test_ids_equal_cn_clip_on_generated_corpus(tok, context_length):
    _check_corpus(tok, 400, context_length, seed=context_length)


@pytest.mark.slow
def test_ids_equal_cn_clip_on_large_corpus(tok):
    _check_corpus(tok, 8000, 52, seed=12345)  # 约 1 万条（另加 2000 条随机码位）


def test_tokens_equal_cn_clip_full_tokenizer(tok):
    # 不截断时词元串也逐个相同（长文本不被 context_length 掩盖）
    for text in make_corpus(300, seed=7):
        assert tok.tokenize(text) == cn._tokenizer.tokenize(text), repr(text)


def test_wordpiece_greedy_longest_match_and_unk():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "un", "##aff", "##able", "##a", "a", "##ff"])}
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]   # 取最长的 ##aff，不是 ##a + ##ff
    assert wordpiece("unx", vocab) == ["[UNK]"]                          # 一段匹配不上，整个词都是 [UNK]
    assert wordpiece("a" * 201, vocab) == ["[UNK]"]                      # 超长的词
    assert basic_tokenize("Héllo,世界!  ok") == ["hello", ",", "世", "界", "!", "ok"]


def test_special_tokens_truncation_and_padding(tok):
    ids = tok(["一只猫" * 40, "猫"], context_length=10)
    assert ids[0, 0] == tok.cls_id and ids[0, -1] == tok.sep_id and (ids[0] != tok.pad_id).all()  # 截断后仍以 [SEP] 结尾
    assert ids[1].tolist() == [tok.cls_id, tok.token_to_id["猫"], tok.sep_id] + [tok.pad_id] * 7
    assert tok.trim_padding(ids[1:]).shape == (1, 3)
    assert tok.decode(tok("a dog 在草地上")[0]) == "a dog在草地上"  # 汉字两边不加空格


def test_state_dict_roundtrip_is_weights_only_safe(tok, tmp_path):
    torch.save({"tokenizer": tok.state_dict()}, tmp_path / "t.pt")
    state = torch.load(tmp_path / "t.pt", weights_only=True)["tokenizer"]
    back = tokenizer_from_state_dict(state)
    assert isinstance(back, BertChineseTokenizer) and back.vocab == tok.vocab
    texts = make_corpus(50, seed=3)
    assert torch.equal(back(texts), tok(texts))
    assert isinstance(tokenizer_from_state_dict(ChineseTokenizer().state_dict()), ChineseTokenizer)


def test_vocab_file_argument_and_clear_errors(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n猫\n##s\ncat\n", encoding="utf-8")
    small = BertChineseTokenizer(vocab_file=str(path), context_length=8)
    assert small("cats 猫狗")[0].tolist() == [2, 6, 5, 4, 1, 3, 0, 0]
    with pytest.raises(FileNotFoundError, match="vocab.txt|cn_clip"):
        BertChineseTokenizer(vocab_file=str(tmp_path / "missing.txt"))
    path.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="特殊词元"):
        BertChineseTokenizer(vocab_file=str(path))
    with pytest.raises(ValueError, match="context_length"):
        BertChineseTokenizer(context_length=1)


def test_missing_cn_clip_error_says_how_to_get_a_vocab(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install cn_clip"):
        default_vocab_file()

"""ChineseTokenizer 的性质（第 3 章 sec-step-data）。"""
import subprocess
import sys

import pytest
import torch

from clipedu import ChineseTokenizer
from clipedu.tokenizer import EOS_ID, PAD_ID, SOS_ID, UNK_ID, VOCAB, VOCAB_SIZE


@pytest.fixture(scope="module")
def tok():
    return ChineseTokenizer()


def test_vocab_covers_gb2312_ascii_and_punctuation(tok):
    assert tok.vocab[:4] == ["[PAD]", "[UNK]", "[SOS]", "[EOS]"] and PAD_ID == 0
    hanzi = [c for c in tok.vocab if "\u4e00" <= c <= "\u9fff"]
    assert len(hanzi) == 6763  # GB2312 一、二级汉字
    assert all(chr(c) in tok.token_to_id for c in range(0x20, 0x7F))
    for p in "。、“”《》【】…—":
        assert p in tok.token_to_id
    assert tok.vocab_size == VOCAB_SIZE == len(set(tok.vocab))


def test_round_trip_in_vocabulary(tok):
    for text in ["一只猫", "红色的圆形和蓝色的三角形", "CLIP 模型 (2021) 用了 4 亿对图文。", "“引号”《书名》"]:
        ids = tok(text)[0]
        assert ids[0] == SOS_ID
        assert tok.decode(ids) == text


def test_nfkc_full_width_to_half_width(tok):
    assert tok.decode(tok("ＣＬＩＰ１２３！？")[0]) == "CLIP123!?"
    torch.testing.assert_close(tok("ＡＢＣ，"), tok("ABC,"))


def test_truncation_keeps_eos(tok):
    out = tok(["很" * 100, "短"], context_length=8)
    assert out.shape == (2, 8) and out.dtype == torch.long
    assert out[0, -1] == EOS_ID and out[0, 0] == SOS_ID and (out[0, 1:-1] != PAD_ID).all()
    assert out[1].tolist() == [SOS_ID, tok.token_to_id["短"], EOS_ID] + [PAD_ID] * 5


def test_empty_string(tok):
    assert tok([""], context_length=4).tolist() == [[SOS_ID, EOS_ID, PAD_ID, PAD_ID]]
    assert tok.decode(tok("")[0]) == ""


def test_unknown_characters_become_unk(tok):
    ids = tok.encode("猫😺Ω")  # emoji 与希腊字母不在词表里
    assert ids[1] == UNK_ID and ids[2] == UNK_ID and ids[0] == tok.token_to_id["猫"]


@pytest.mark.slow
def test_vocab_identical_across_processes():
    code = "from clipedu.tokenizer import VOCAB; import hashlib; print(hashlib.sha256('\\n'.join(VOCAB).encode()).hexdigest())"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    import hashlib
    assert runs == {hashlib.sha256("\n".join(VOCAB).encode()).hexdigest() + "\n"}


def test_state_dict_round_trip(tmp_path, tok):
    path = tmp_path / "tok.pt"
    torch.save(tok.state_dict(), path)
    back = ChineseTokenizer.from_state_dict(torch.load(path, weights_only=True))
    assert back.vocab == tok.vocab and back.context_length == tok.context_length
    torch.testing.assert_close(back(["一只狗"]), tok(["一只狗"]))


@pytest.mark.parametrize("bad", [None, 3, ["ok", 5], b"bytes"])
def test_non_string_captions_raise(tok, bad):
    with pytest.raises(TypeError, match="str"):
        tok(bad)


@pytest.mark.parametrize("L", [0, 1, -3])
def test_context_length_too_small(tok, L):
    with pytest.raises(ValueError, match=r"\[SOS\].*\[EOS\]"):
        tok("猫", context_length=L)


def test_trim_padding_keeps_text_features(tok):
    """截掉尾部 [PAD] 列不改变文本特征：因果注意力加 [EOS] 取句向量，[EOS] 之后的位置不起作用。"""
    import clipedu

    full = tok(["红色的圆形", "一个位于左上方的大号蓝色三角形", ""], context_length=32)
    trimmed = tok.trim_padding(full)
    assert trimmed.shape == (3, 17) and torch.equal(trimmed, full[:, :17])
    torch.manual_seed(0)
    model = clipedu.create_model("tiny-cpu").eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(trimmed), model.encode_text(full), rtol=1e-5, atol=1e-6)
    assert tok.trim_padding(tok([""], context_length=8)).shape == (1, 2)

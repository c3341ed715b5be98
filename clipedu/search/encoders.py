"""编码器：检查点 → ``encode_images`` / ``encode_texts`` 两个函数（见第 6 章 sec-service）。

两种后端接口相同，输入输出都是 numpy：

- ``TorchEncoder``：用公开 API 载入，``clipedu.load_model``（clipedu 自己训练的检查点，
  分词器随检查点保存）或 ``clipedu.load_pretrained``（OpenAI/open_clip 权重，配英文 BPE 分词器）；
- ``OnnxEncoder``：读 ``python -m clipedu export`` 的输出目录，只用 onnxruntime 与纯 Python 分词，
  查询时不导入 torch。

``fingerprint`` 是源检查点文件的 SHA-256：同一个检查点导出的 ONNX 模型指纹相同，
所以用 PyTorch 建的索引可以直接用 ONNX 后端提供服务；换了模型则拒绝加载索引。
"""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np

from ..fileinfo import file_sha256

ONNX_META = "clipedu-onnx.json"


# ---------------------------------------------------------------- PyTorch 后端
def pretrained_tokenizer(model):
    """原始预训练权重不带分词器：按文本塔选一个。

    Chinese-CLIP（BERT 文本塔）用它的 WordPiece 分词器；OpenAI/open_clip 用英文 BPE
    （[EOS] 是 49407）。"""
    from ..pretrained import english_tokenizer

    if model.config.text.arch == "bert":
        from ..bert_tokenizer import BertChineseTokenizer
        return BertChineseTokenizer(context_length=model.context_length)
    if model.eos_token_id == 49407:
        return english_tokenizer(context_length=model.context_length)
    raise ValueError(
        f"这个预训练权重的词表（{model.config.text.vocab_size} 个词元、"
        f"[EOS]={model.eos_token_id}）没有对应的分词器；"
        "请用带分词器的 clipedu 检查点 / no tokenizer for this checkpoint"
    )


class TorchEncoder:
    """PyTorch 后端。模型只载入一次；查询在 ``torch.inference_mode`` 下逐批编码。"""

    backend = "torch"

    def __init__(self, model, tokenizer, fingerprint: str, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.fingerprint = model.eval(), tokenizer, fingerprint
        self.image_size = int(model.image_size)
        self.embed_dim = int(model.text_projection.shape[1])
        self.inv_temperature = float(model.logit_scale.detach().exp())
        self._torch = torch

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """float32 [B, 3, S, S] → 归一化特征 float32 [B, D]。"""
        with self._torch.inference_mode():
            return self.model.encode_image(self._torch.from_numpy(images)).float().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """字符串列表 → 归一化特征 float32 [B, D]。"""
        tokens = self.tokenizer(list(texts))
        trim = getattr(self.tokenizer, "trim_padding", None)
        if trim is not None:  # 因果文本塔在 [EOS] 处取向量，截掉全是 [PAD] 的尾部列结果不变
            tokens = trim(tokens)
        with self._torch.inference_mode():
            return self.model.encode_text(tokens).float().numpy()

    def tokenizer_state(self) -> dict:
        state = getattr(self.tokenizer, "state_dict", None)
        if state is not None:
            return state()
        return {"type": "open_clip_bpe", "context_length": int(self.model.context_length)}


def load_torch_encoder(checkpoint: str | os.PathLike, threads: int | None = None) -> TorchEncoder:
    """clipedu 检查点优先；不是的话当作 OpenAI/open_clip 权重读。分词器取检查点自带的那一个。"""
    from .. import load_model, load_pretrained
    from ..checkpoint import is_clipedu_checkpoint, load_checkpoint
    from ..errors import UsageError
    from ..pretrained import is_torchscript

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"找不到检查点：{path} / checkpoint not found")
    if not path.is_file():  # 目录、FIFO、设备：读它可能永远阻塞
        raise UsageError(f"--checkpoint {path} 不是普通文件（目录、FIFO 或设备）；--backend onnx 时才是导出目录"
                         " / not a regular file")
    # 先认出是哪种文件，再用对应的函数读：坏文件的说明就是那个函数的说明，不会两种都试一遍
    p = str(path)
    if not (p.endswith(".safetensors") or is_torchscript(p)) and is_clipedu_checkpoint(load_checkpoint(p)):
        model, tokenizer = load_model(path)
    else:
        model, _ = load_pretrained(p)
        tokenizer = pretrained_tokenizer(model)
    return TorchEncoder(model, tokenizer, file_sha256(path), threads)


# ---------------------------------------------------------------- ONNX 后端
class CharTokenizer:
    """``ChineseTokenizer`` 的纯 Python 版（逐字切分、NFKC 归一化），输出 int64 numpy，不需要 torch。

    状态与 ``ChineseTokenizer.state_dict()`` 相同；测试检查两者对同一批文本给出同样的 id。
    """

    def __init__(self, vocab: list[str], context_length: int):
        self.vocab, self.context_length = list(vocab), int(context_length)
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.pad, self.unk, self.sos, self.eos = (self.token_to_id[t] for t in ("[PAD]", "[UNK]", "[SOS]", "[EOS]"))

    def __call__(self, texts: list[str]) -> np.ndarray:
        L = self.context_length
        out = np.full((len(texts), L), self.pad, dtype=np.int64)
        for b, text in enumerate(texts):
            body = [self.token_to_id.get(ch, self.unk) for ch in unicodedata.normalize("NFKC", text)]
            ids = [self.sos] + body[: L - 2] + [self.eos]
            out[b, : len(ids)] = ids
        return out


class WordPieceTokenizer:
    """``BertChineseTokenizer`` 的 numpy 版（Chinese-CLIP 的 BERT 文本塔用），不导入 torch。

    分词本身调用 ``clipedu.bert_tokenizer`` 的纯 Python 函数，这里只做 ``[CLS] … [SEP] [PAD]``
    的拼接；测试检查两者对同一批文本给出同样的 id。"""

    def __init__(self, vocab: list[str], context_length: int, lower_case: bool = True):
        self.context_length, self.lower_case = int(context_length), bool(lower_case)
        self.token_to_id = {t: i for i, t in enumerate(vocab)}
        self.pad, self.cls, self.sep = (self.token_to_id[t] for t in ("[PAD]", "[CLS]", "[SEP]"))

    def __call__(self, texts: list[str]) -> np.ndarray:
        from ..bert_tokenizer import basic_tokenize, wordpiece

        L = self.context_length
        out = np.full((len(texts), L), self.pad, dtype=np.int64)
        for b, text in enumerate(texts):
            body = [self.token_to_id[p] for w in basic_tokenize(text, self.lower_case)
                    for p in wordpiece(w, self.token_to_id)]
            ids = [self.cls] + body[: L - 2] + [self.sep]
            out[b, : len(ids)] = ids
        return out


def tokenizer_from_state(state: dict):
    """导出目录里记下的分词器状态 → 可调用的分词器（返回 numpy int64 [B, L]）。"""
    if state.get("type") == "ChineseTokenizer":
        return CharTokenizer(state["vocab"], state["context_length"])
    if state.get("type") == "BertChineseTokenizer":
        return WordPieceTokenizer(state["vocab"], state["context_length"], state.get("lower_case", True))
    if state.get("type") == "open_clip_bpe":  # 英文 BPE 分词器来自 open_clip（它会导入 torch）
        from ..pretrained import english_tokenizer

        tok = english_tokenizer(context_length=int(state["context_length"]))
        return lambda texts: tok(list(texts)).numpy()
    raise ValueError(f"ONNX 后端不认识这种分词器：{state.get('type')!r} / unsupported tokenizer")


class OnnxEncoder:
    """ONNX Runtime 后端：``image.onnx`` 与 ``text.onnx`` 都接受动态批大小。"""

    backend = "onnx"

    def __init__(self, export_dir: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        export_dir = Path(export_dir)
        meta_path = export_dir / ONNX_META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{export_dir} 不是 ONNX 导出目录（缺少 {ONNX_META}）；"
                "请先运行 python -m clipedu export --checkpoint CKPT --out DIR / not an ONNX export"
            )
        opts = ort.SessionOptions()
        # 算完一批后工作线程不空转等活：与 import clipedu 限制 OpenMP 自旋同理，共享的 2 核机器上
        # 空转的线程会抢走检索与 HTTP 处理的 CPU（见 benchmarks/results/serve.md）。服务两次请求之间
        # 隔的是毫秒级的网络往返，不是训练里相邻算子之间的微秒级空隙，所以这里干脆不自旋
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            models = [export_dir / Path(meta[k]).name for k in ("image_model", "text_model")]
            self.image_session, self.text_session = (
                ort.InferenceSession(str(m), opts, providers=providers) for m in models)
            self.tokenizer = tokenizer_from_state(meta["tokenizer"])
            self.fingerprint = meta["source_sha256"]
            self.image_size, self.embed_dim = int(meta["image_size"]), int(meta["embed_dim"])
            self.inv_temperature = float(meta["inv_temperature"])
        except Exception as e:  # noqa: BLE001  JSON、缺键、onnxruntime 读不出模型（各抛各的异常）
            from ..errors import CorruptFileError
            raise CorruptFileError(f"ONNX 导出目录 {export_dir} 已损坏或不完整（{type(e).__name__}: {str(e)[:120]}）；"
                             "请重新运行 python -m clipedu export / corrupt ONNX export") from None

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        return self.image_session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})[0]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.text_session.run(None, {"tokens": self.tokenizer(list(texts))})[0]


def load_encoder(checkpoint: str | os.PathLike, backend: str = "torch", threads: int | None = None):
    """``backend="torch"``：CKPT 是检查点文件；``backend="onnx"``：CKPT 是 export 的输出目录。"""
    if backend == "torch":
        return load_torch_encoder(checkpoint, threads)
    if backend == "onnx":
        return OnnxEncoder(checkpoint, threads)
    raise ValueError(f"未知后端 {backend!r}；可选 torch | onnx / unknown backend")

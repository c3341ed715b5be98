"""clipedu export：ONNX 与 PyTorch 的输出差 ≤ 1e-4（ViT 与 ResNet 图像塔、因果与 BERT 文本塔，动态批大小），
serve --backend onnx 不导入 torch。"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import free_port, save_random_checkpoint, write_shapes_gallery

from clipedu.config import CLIPConfig, TextConfig, VisionConfig
from clipedu.search.encoders import OnnxEncoder, WordPieceTokenizer, load_encoder
from clipedu.search.export import export_onnx
from clipedu.search.index import build_index, load_index

ROOT = Path(__file__).resolve().parents[1]
TINY_RESNET = CLIPConfig(
    embed_dim=64,
    vision=VisionConfig(arch="resnet", image_size=64, patch_size=0, width=8, layers=(1, 1, 1, 1), heads=4),
    text=TextConfig(context_length=16, width=64, heads=4, layers=2),
)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["tiny-cpu", TINY_RESNET], ids=["vit", "resnet"])
def test_onnx_matches_pytorch_with_dynamic_batch(tmp_path, config):
    ckpt = save_random_checkpoint(tmp_path / "m.pt", config)
    result = export_onnx(ckpt, tmp_path / "onnx", log=lambda *a: None)
    assert result["image_max_abs_diff"] <= 1e-4 and result["text_max_abs_diff"] <= 1e-4
    torch_enc, onnx_enc = load_encoder(ckpt), OnnxEncoder(tmp_path / "onnx")
    assert onnx_enc.fingerprint == torch_enc.fingerprint and onnx_enc.image_size == torch_enc.image_size
    assert abs(onnx_enc.inv_temperature - torch_enc.inv_temperature) < 1e-5
    rng = np.random.default_rng(1)
    for B in (1, 2, 7):  # 导出时的示例批大小是 2：别的批大小也要对
        x = rng.standard_normal((B, 3, torch_enc.image_size, torch_enc.image_size)).astype(np.float32)
        np.testing.assert_allclose(onnx_enc.encode_images(x), torch_enc.encode_images(x), atol=1e-4, rtol=0)
        texts = ["红色的圆形", "一个蓝色的小正方形", "猫"] * 3
        np.testing.assert_allclose(onnx_enc.encode_texts(texts[:B]), torch_enc.encode_texts(texts[:B]), atol=1e-4, rtol=0)


def save_cnclip_checkpoint(path: Path) -> Path:
    """随机权重的小 Chinese-CLIP（ViT + 2 层 BERT），按发布的 clip_cn_*.pt 的布局存盘。"""
    import torch
    from test_cnclip_model import VIT, cn_model, save_layout

    torch.manual_seed(0)
    return save_layout(cn_model(VIT, 2), "training", path)


BERT_TEXTS = ["红色的圆形", "a dog running on the grass 在草地上奔跑", "红色的汽车停在路边。" * 8, "",
              "😀 emoji ＡＢＣ１２３", "Café naïve résumé", "零\u200b宽\x07控制", "unaffable ##x [UNK]"]


@pytest.mark.slow
def test_bert_text_tower_onnx_matches_pytorch(tmp_path):
    """Chinese-CLIP 的 BERT 文本塔（[PAD] 掩码、[CLS] 池化）导出后与 PyTorch 一致；ONNX 端的 numpy 分词器 id 相同。"""
    ckpt = save_cnclip_checkpoint(tmp_path / "clip_cn_tiny.pt")
    result = export_onnx(ckpt, tmp_path / "onnx", log=lambda *a: None)
    assert result["image_max_abs_diff"] <= 1e-4 and result["text_max_abs_diff"] <= 1e-4
    torch_enc, onnx_enc = load_encoder(ckpt), OnnxEncoder(tmp_path / "onnx")
    assert isinstance(onnx_enc.tokenizer, WordPieceTokenizer) and onnx_enc.fingerprint == torch_enc.fingerprint
    np.testing.assert_array_equal(onnx_enc.tokenizer(BERT_TEXTS), torch_enc.tokenizer(BERT_TEXTS).numpy())
    for B in (1, 3, len(BERT_TEXTS)):  # 导出时的示例批大小是 2；TorchEncoder 截掉尾部 [PAD]，ONNX 用满长 52
        np.testing.assert_allclose(onnx_enc.encode_texts(BERT_TEXTS[:B]), torch_enc.encode_texts(BERT_TEXTS[:B]),
                                   atol=1e-4, rtol=0)


def test_export_cli_rejects_unknown_format(tmp_path):
    from clipedu.cli import main

    ckpt = save_random_checkpoint(tmp_path / "m.pt")
    with pytest.raises(SystemExit) as e:  # argparse：不认识的 --format 是用法错误
        main(["export", "--checkpoint", str(ckpt), "--format", "tensorrt", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert main(["serve", "--index", str(tmp_path), "--checkpoint", str(ckpt)]) == 2  # 不是索引目录


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-cpu", "cn-clip"])
def test_serve_onnx_backend_runs_without_torch(tmp_path, model):
    """用 PyTorch 建的索引，ONNX 后端提供服务：结果相同，进程里没有 torch（BERT 分词器也是纯 Python）。"""
    if model == "cn-clip":
        ckpt = save_cnclip_checkpoint(tmp_path / "clip_cn_tiny.pt")
    else:
        ckpt = save_random_checkpoint(tmp_path / "m.pt")
    write_shapes_gallery(tmp_path / "images", 30)
    encoder = load_encoder(ckpt)
    build_index(encoder, tmp_path / "images", tmp_path / "idx", progress=False, log=lambda *a: None)
    export_onnx(ckpt, tmp_path / "onnx", check=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clipedu", "serve", "--index", str(tmp_path / "idx"),
                             "--checkpoint", str(tmp_path / "onnx"), "--backend", "onnx", "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                health = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read())
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
                time.sleep(0.2)
        assert health["backend"] == "onnx" and health["torch_loaded"] is False
        q = urllib.parse.urlencode({"q": "红色的圆形", "k": 5})
        got = json.loads(urllib.request.urlopen(f"{url}/search?{q}", timeout=30).read())["results"]
        want = load_index(tmp_path / "idx").search(encoder.encode_texts(["红色的圆形"]), 5)[1][0].tolist()
        assert [r["id"] for r in got] == want
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_export_refuses_to_replace_another_models_export(tmp_path, capsys):
    """同一个检查点可以重新导出；另一个模型的完整导出只有加 --overwrite 才会被覆盖。"""
    from clipedu.cli import main

    a = save_random_checkpoint(tmp_path / "a.pt")
    b = save_random_checkpoint(tmp_path / "b.pt", seed=1)
    out = tmp_path / "onnx"
    assert main(["export", "--checkpoint", str(a), "--out", str(out), "--no-check"]) == 0
    meta = (out / "clipedu-onnx.json").read_text(encoding="utf-8")
    assert main(["export", "--checkpoint", str(a), "--out", str(out), "--no-check"]) == 0  # 同一个模型：照常
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(b), "--out", str(out), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "a.pt" in err and len(err.strip().splitlines()) == 1
    assert (out / "clipedu-onnx.json").read_text(encoding="utf-8") == meta  # 原来的导出原样
    assert main(["export", "--checkpoint", str(b), "--out", str(out), "--no-check", "--overwrite"]) == 0
    assert json.loads((out / "clipedu-onnx.json").read_text())["source_checkpoint"] == "b.pt"
    (out / "clipedu-onnx.json").write_text("{坏", encoding="utf-8")  # 元数据坏了：不认识就不覆盖
    assert main(["export", "--checkpoint", str(a), "--out", str(out), "--no-check"]) == 2

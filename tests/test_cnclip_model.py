"""Chinese-CLIP 权重载入 clipedu：每种文件布局、ViT 与 ResNet、不同文本层数，嵌入与 cn_clip 一致（见第 6 章 sec-cnclip）。"""
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cn_clip.clip as cn
from cn_clip.clip.model import CLIP as CnCLIP, convert_state_dict

import clipedu
from clipedu.bert import is_bert_clip
from clipedu.bert_tokenizer import BertChineseTokenizer
from clipedu.cnclip_weights import cnclip_transform, load_cnclip
from clipedu.config import PRESETS, CLIPConfig, TextConfig, VisionConfig, get_preset

CN_CONFIGS = Path(cn.__file__).parent / "model_configs"


def cn_model(vision: dict, text_layers: int, text_width: int = 64, embed_dim: int = 48) -> CnCLIP:
    """cn_clip 的 CLIP，形状很小、权重随机（所有参数和 BN 统计量都扰动过，不留全 0 或全 1 的张量）。"""
    text = dict(vocab_size=21128, text_attention_probs_dropout_prob=0.1, text_hidden_act="gelu",
                text_hidden_dropout_prob=0.1, text_hidden_size=text_width, text_initializer_range=0.02,
                text_intermediate_size=4 * text_width, text_max_position_embeddings=64,
                text_num_attention_heads=text_width // 64, text_num_hidden_layers=text_layers, text_type_vocab_size=2)
    model = CnCLIP(embed_dim=embed_dim, **vision, **text)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model.eval()


VIT = dict(image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8)
RESNET = dict(image_resolution=64, vision_layers=[1, 2, 1, 1], vision_width=16, vision_patch_size=None)


def save_layout(model: CnCLIP, layout: str, path: Path) -> Path:
    """把 cn_clip 模型按 Chinese-CLIP 的各种方式存盘。"""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "training":      # 发布的 clip_cn_*.pt：DDP 前缀 + 外壳，另带 pooler（CLIP 不用）
        wrapped = {"module." + k: v for k, v in sd.items()}
        wrapped["module.bert.pooler.dense.weight"] = torch.randn(64, 64)
        torch.save({"epoch": 3, "step": 1000, "name": "muge_finetune", "state_dict": wrapped}, path)
    elif layout == "bare_module":
        torch.save({"module." + k: v for k, v in sd.items()}, path)
    elif layout == "bare":
        torch.save(sd, path)
    elif layout == "safetensors":
        from safetensors.torch import save_file
        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif layout == "flash":       # --use-flash-attention 训练的检查点：Wqkv 键名
        flash = convert_state_dict({"module." + k: v for k, v in sd.items()})
        assert any("Wqkv" in k for k in flash)
        torch.save({"epoch": 1, "state_dict": flash}, path)
    else:
        raise ValueError(layout)
    return path


LAYOUTS = ["training", "bare_module", "bare", "safetensors", "flash"]
TEXTS = ["一张猫的照片", "a dog running on the grass 在草地上奔跑", "红色的汽车停在路边。" * 8, "", "😀 emoji ＡＢＣ"]


@pytest.mark.parametrize("tower, vision, text_layers", [("vit", VIT, 2), ("resnet", RESNET, 3), ("vit", VIT, 1)])
def test_embeddings_equal_cn_clip_in_every_layout(tmp_path, tower, vision, text_layers):
    torch.manual_seed(0)
    ref = cn_model(vision, text_layers)
    res = vision["image_resolution"]
    images = torch.randn(3, 3, res, res)
    tokens = cn.tokenize(TEXTS)
    with torch.no_grad():
        ref_img = F.normalize(ref.encode_image(images), dim=-1)
        ref_txt = F.normalize(ref.encode_text(tokens), dim=-1)
    for layout in LAYOUTS:
        path = save_layout(ref, layout, tmp_path / f"{layout}.pt")
        model, preprocess = clipedu.load_pretrained(str(path))
        assert is_bert_clip(model) and model.config.vision.arch == tower and not model.training
        assert model.config.text.layers == text_layers and model.config.vision.image_size == res
        with torch.no_grad():
            torch.testing.assert_close(model.encode_image(images), ref_img, atol=1e-5, rtol=0)
            torch.testing.assert_close(model.encode_text(BertChineseTokenizer()(TEXTS)), ref_txt, atol=1e-5, rtol=0)
            torch.testing.assert_close(model.logit_scale, ref.logit_scale)
    # 直接入口 load_cnclip 与 load_pretrained 给出同一个模型
    direct, _ = load_cnclip(str(path))
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), model.state_dict().values()))


def test_trailing_padding_does_not_change_text_features():
    torch.manual_seed(1)
    config = CLIPConfig(embed_dim=32, quick_gelu=True,
                        vision=VisionConfig(arch="vit", image_size=16, patch_size=8, width=64, layers=1, heads=1),
                        text=TextConfig(arch="bert", vocab_size=21128, context_length=52, width=64, heads=1, layers=2))
    model = clipedu.CLIP(config).eval()
    assert is_bert_clip(model) and "token_embedding.weight" not in model.state_dict()
    tok = BertChineseTokenizer()
    tokens = tok(["一只猫", "一只在草地上奔跑的小狗"])
    with torch.no_grad():  # [PAD] 被掩码屏蔽，截掉尾部的 [PAD] 列结果不变（训练时据此省计算）
        torch.testing.assert_close(model.encode_text(tok.trim_padding(tokens)), model.encode_text(tokens),
                                   atol=1e-6, rtol=0)


def _cn_released(name: str) -> CnCLIP:
    """按 cn_clip 自己的 model_configs/*.json 在 meta 设备上建发布模型（不占内存、不初始化）。"""
    vision_name, text_name = cn.utils._MODEL_INFO[name]["struct"].split("@")
    info = json.loads((CN_CONFIGS / f"{vision_name}.json").read_text())
    info.update(json.loads((CN_CONFIGS / f"{text_name}.json").read_text()))
    if isinstance(info["vision_layers"], str):
        info["vision_layers"] = json.loads(info["vision_layers"])
    with torch.device("meta"):
        return CnCLIP(**info)


@pytest.mark.parametrize("preset, cn_name", [("cn-clip-rn50", "RN50"), ("cn-clip-vit-b-16", "ViT-B-16"),
                                             ("cn-clip-vit-l-14", "ViT-L-14"), ("cn-clip-vit-l-14-336", "ViT-L-14-336"),
                                             ("cn-clip-vit-h-14", "ViT-H-14")])
def test_presets_match_released_shapes(preset, cn_name):
    ref = _cn_released(cn_name)
    with torch.device("meta"):
        mine = clipedu.CLIP(get_preset(preset))
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in ref.parameters())
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == ref_shapes  # 键名与形状逐个相同
    assert mine.image_size == cn.utils._MODEL_INFO[cn_name]["input_resolution"]
    # 头数：ViT 每头 64 维（ViT-H 为 80），与 cn_clip 相同
    if mine.config.vision.arch == "vit":
        assert mine.config.vision.heads == ref.visual.transformer.resblocks[0].attn.num_heads
    assert mine.config.text.heads == ref.bert_config.num_attention_heads


def test_preset_names_cover_all_released_models():
    assert {f"cn-clip-{n.lower()}" for n in cn.available_models()} <= set(PRESETS)


@pytest.mark.parametrize("size, mode", [((50, 30), "RGB"), ((32, 32), "L"), ((7, 90), "RGBA"), ((224, 224), "P")])
def test_preprocess_equals_cn_clip_image_transform(size, mode):
    torch.manual_seed(0)
    arr = (torch.rand(size[1], size[0], 3) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(arr).convert(mode)
    for res in (32, 224):
        torch.testing.assert_close(cnclip_transform(res)(image), cn.image_transform(res)(image), atol=0, rtol=0)


# ---------------------------------------------------------------- 坏文件：一行清楚的错误
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def tiny_sd():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in cn_model(VIT, 1).state_dict().items()}


def test_malformed_files_get_clear_errors(tmp_path, tiny_sd):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": tiny_sd}, good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all " * 20)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    torch.save({"state_dict": _Evil()}, tmp_path / "evil.pt")  # 读它时若执行了代码，就会调用 os.system
    torch.save({"state_dict": {"foo": torch.ones(2)}, "epoch": 1}, tmp_path / "notclip.pt")
    for name, needle in [("truncated.pt", "损坏"), ("garbage.pt", "损坏"), ("bad.safetensors", "损坏"),
                         ("evil.pt", "拒绝加载"), ("notclip.pt", "Chinese-CLIP"), ("missing.pt", "找不到")]:
        with pytest.raises((ValueError, FileNotFoundError), match=needle):
            load_cnclip(str(tmp_path / name))
    for name in ("truncated.pt", "garbage.pt", "evil.pt"):  # 通用入口也一样
        with pytest.raises(ValueError, match="损坏|拒绝加载"):
            clipedu.load_pretrained(str(tmp_path / name))


@pytest.mark.parametrize("change, needle", [
    (lambda sd: sd.pop("visual.transformer.resblocks.1.ln_2.weight"), "缺少"),
    (lambda sd: sd.update({"text_projection": torch.randn(64, 40)}), "形状对不上"),
    (lambda sd: sd.update({"visual.positional_embedding": torch.randn(7, 128)}), "网格"),
    (lambda sd: sd.update({"bert.encoder.layer.0.output.dense.weight": torch.randn(64, 100)}), "形状不符"),
    (lambda sd: sd.pop("bert.embeddings.position_embeddings.weight"), "position_embeddings"),
    (lambda sd: sd.update({"visual.extra_head.weight": torch.randn(3)}), "多余的键"),
    (lambda sd: [sd.pop(k) for k in [k for k in sd if k.startswith("visual.")]], "图像塔"),
])
def test_mismatched_files_get_clear_errors(tmp_path, tiny_sd, change, needle):
    sd = dict(tiny_sd)
    change(sd)
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=needle):
        clipedu.load_pretrained(str(tmp_path / "x.pt"))


def test_grad_checkpointing_and_bf16_autocast_on_bert_tower():
    torch.manual_seed(0)
    config = CLIPConfig(embed_dim=32, quick_gelu=True,
                        vision=VisionConfig(arch="vit", image_size=16, patch_size=8, width=64, layers=1, heads=1),
                        text=TextConfig(arch="bert", vocab_size=21128, context_length=52, width=64, heads=1, layers=2))
    model = clipedu.CLIP(config).train()  # dropout 为 0：两次前向逐位可比
    tokens, images = BertChineseTokenizer()(["一只猫", "草地上的狗"]), torch.randn(2, 3, 16, 16)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        img, txt, scale = model(images, tokens)
        (scale * img @ txt.T).logsumexp(dim=1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.bert.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        low = model.eval().encode_text(tokens)
    torch.testing.assert_close(low.float(), model.encode_text(tokens), atol=0.05, rtol=0)


def test_search_encoder_gives_raw_cnclip_weights_the_bert_tokenizer(tmp_path):
    """检索服务直接读 Chinese-CLIP 原始权重：配 BERT 分词器，文本特征与 cn_clip 一致。"""
    from clipedu.search.encoders import load_torch_encoder

    torch.manual_seed(0)
    ref = cn_model(VIT, 1)
    path = save_layout(ref, "training", tmp_path / "clip_cn_tiny.pt")
    enc = load_torch_encoder(path)
    assert isinstance(enc.tokenizer, BertChineseTokenizer)
    texts = ["一只猫", "一只在草地上奔跑的小狗"]
    with torch.no_grad():
        want = F.normalize(ref.encode_text(cn.tokenize(texts)), dim=-1).numpy()
    got = enc.encode_texts(texts)
    assert got.shape == want.shape
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), atol=1e-5, rtol=0)

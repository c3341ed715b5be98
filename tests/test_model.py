"""模型的性质：每个预设都能建、前向反向、键名与 OpenAI 一致、初始化、温度截断、重算、bf16、坏输入。"""
import math

import pytest
import torch

import clipedu
from clipedu.config import get_preset
from clipedu.model import CLIP, create_model

torch.set_num_threads(1)

# OpenAI 发布的权重中图像塔的参数量（与词表无关，可以直接对照）
OPENAI_VISUAL_PARAMS = {"rn50": 38_316_896, "vit-b-32": 87_849_216, "vit-b-16": 86_192_640}


def shrunk_vit():
    c = get_preset("vit-b-32")
    c.embed_dim = 64
    c.vision.image_size, c.vision.patch_size, c.vision.width, c.vision.layers, c.vision.heads = 32, 8, 64, 2, 2
    c.text.context_length, c.text.width, c.text.layers, c.text.heads = 16, 64, 2, 2
    return c


def shrunk_resnet():
    c = get_preset("rn50")
    c.embed_dim = 64
    c.vision.image_size, c.vision.width, c.vision.layers, c.vision.heads = 64, 16, (1, 2, 1, 1), 8
    c.text.context_length, c.text.width, c.text.layers, c.text.heads = 16, 64, 2, 2
    return c


def tokens_for(model, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = model.context_length
    t = torch.randint(4, 200, (B, L), generator=g)
    eos = torch.randint(2, L, (B,), generator=g)
    for b in range(B):
        t[b, eos[b]] = model.eos_token_id
        t[b, eos[b] + 1:] = 0
    return t


def images_for(model, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, model.image_size, model.image_size, generator=g)


@pytest.mark.parametrize("name", list(clipedu.PRESETS))
def test_every_preset_builds(name):
    with torch.device("meta"):  # 不分配内存，rn50/vit-b-32 也只要几毫秒
        m = create_model(name)
    assert isinstance(m, CLIP) and m.config.vision.image_size == clipedu.PRESETS[name].vision.image_size
    if name in OPENAI_VISUAL_PARAMS:
        assert sum(p.numel() for p in m.visual.parameters()) == OPENAI_VISUAL_PARAMS[name]


@pytest.mark.parametrize("make", [lambda: get_preset("tiny-cpu"), shrunk_vit, shrunk_resnet])
def test_forward_backward_normalised(make):
    torch.manual_seed(0)
    m = create_model(make())
    img, txt, scale = m(images_for(m), tokens_for(m))
    assert img.shape == txt.shape == (4, m.config.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(4))
    (scale * img @ txt.T).logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_openai_state_dict_names():
    vit = create_model(shrunk_vit()).state_dict()
    for k in ["visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
              "visual.transformer.resblocks.1.attn.in_proj_weight", "visual.transformer.resblocks.0.attn.out_proj.bias",
              "visual.transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.0.mlp.c_proj.bias",
              "visual.transformer.resblocks.0.ln_2.bias", "visual.ln_post.weight", "visual.proj",
              "token_embedding.weight", "positional_embedding", "transformer.resblocks.1.attn.in_proj_bias",
              "ln_final.weight", "text_projection", "logit_scale"]:
        assert k in vit, k
    rn = create_model(shrunk_resnet()).state_dict()
    for k in ["visual.conv1.weight", "visual.bn3.running_var", "visual.layer1.0.downsample.0.weight",
              "visual.layer2.0.downsample.1.running_mean", "visual.layer4.0.bn3.weight",
              "visual.attnpool.positional_embedding", "visual.attnpool.q_proj.weight", "visual.attnpool.c_proj.bias"]:
        assert k in rn, k
    assert vit["text_projection"].shape == (64, 64) and vit["visual.proj"].shape == (64, 64)


def test_init_properties():
    torch.manual_seed(0)
    m = create_model(shrunk_resnet())
    assert m.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert m(images_for(m), tokens_for(m))[2].item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert m.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert m.positional_embedding.std().item() == pytest.approx(0.01, rel=0.2)
    assert m.text_projection.std().item() == pytest.approx(64 ** -0.5, rel=0.1)
    assert all((blk.bn3.weight == 0).all() for s in (m.visual.layer1, m.visual.layer4) for blk in s)
    # 残差支路输出投影比注意力输入投影小 (2·layers)^-0.5 倍
    blk = m.transformer.resblocks[0]
    ratio = blk.attn.out_proj.weight.std() / blk.attn.in_proj_weight.std()
    assert ratio.item() == pytest.approx((2 * 2) ** -0.5, rel=0.15)


def test_clamp_logit_scale():
    m = create_model("tiny-cpu")
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    m.clamp_logit_scale()
    assert m.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        m.logit_scale.fill_(-3.0)
    m.clamp_logit_scale()
    assert m.logit_scale.item() == 0.0


def test_eos_pooling_uses_first_eos():
    torch.manual_seed(0)
    m = create_model(shrunk_vit()).eval()
    t = tokens_for(m, B=2)
    t[0, -1] = m.eos_token_id  # 第二个 [EOS] 在第一个之后：只有因果注意力下、取第一个时结果才不变
    a = m.encode_text(t)
    t2 = t.clone()
    t2[:, -1] = 7
    torch.testing.assert_close(a, m.encode_text(t2))
    # 因果：改动 [EOS] 之后的词元不影响句向量
    t3 = t.clone()
    t3[1, -1] = 9
    torch.testing.assert_close(a[1], m.encode_text(t3)[1])


@pytest.mark.parametrize("make", [shrunk_vit, shrunk_resnet])
def test_grad_checkpointing_same_grads(make):
    torch.manual_seed(0)
    m = create_model(make())
    x, t = images_for(m), tokens_for(m)

    def grads():
        m.zero_grad()
        img, txt, s = m(x, t)
        (s * img @ txt.T).logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    ref = grads()
    m.set_grad_checkpointing(True)
    tower = getattr(m.visual, "transformer", m.visual)  # ViT 的 Transformer 或 ResNet 本身
    assert m.transformer.grad_checkpointing and tower.grad_checkpointing
    got = grads()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-6, msg=n)


def test_cpu_bf16_autocast_and_bf16_weights():
    torch.manual_seed(0)
    m = create_model(shrunk_vit())
    x, t = images_for(m), tokens_for(m)
    ref = m(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img, txt, _ = m(x, t)
    assert img.dtype == torch.bfloat16
    torch.testing.assert_close(img.float(), ref[0], atol=0.05, rtol=0)
    img.float().sum().backward()
    mb = create_model(shrunk_resnet()).to(torch.bfloat16)
    out = mb.encode_image(torch.randn(2, 3, 64, 64))  # fp32 输入自动转到权重精度
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_channels_last_same_output():
    torch.manual_seed(0)
    m = create_model(shrunk_resnet()).eval()
    x = images_for(m, B=2)
    ref = m.encode_image(x)
    m.to_channels_last()
    assert m.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(m.encode_image(x), ref, rtol=1e-4, atol=1e-5)


def test_bad_inputs_have_clear_errors():
    m = create_model("tiny-cpu")
    t = tokens_for(m, B=2)
    with pytest.raises(ValueError, match=r"图像尺寸应为 \(3, 32, 32\).*\(1, 28, 28\)"):
        m.encode_image(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="图像尺寸"):
        m.encode_image(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="浮点"):
        m.encode_image(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="超过模型上下文长度 32"):
        m.encode_text(torch.ones(2, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="dtype"):
        m.encode_text(t.float())
    with pytest.raises(TypeError, match="LongTensor"):
        m.encode_text([[1, 2, 3]])
    with pytest.raises(ValueError, match="未知预设"):
        create_model("nope")
    with pytest.raises(TypeError, match="CLIPConfig"):
        create_model(3)
    bad = get_preset("tiny-cpu")
    bad.vision.patch_size = 5
    with pytest.raises(ValueError, match="patch_size"):
        create_model(bad)
    bad = get_preset("tiny-cpu")
    bad.vision.arch = "convnext"
    with pytest.raises(ValueError, match="vision.arch"):
        create_model(bad)


def test_quick_gelu_is_honoured():
    c = shrunk_vit()
    c.quick_gelu = True
    m = create_model(c)
    assert type(m.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert type(create_model(shrunk_vit()).visual.transformer.resblocks[0].mlp.gelu) is torch.nn.GELU


def test_clip_composes_text_tower_under_openai_key_names(tiny_model):
    """文本塔的部件挂在 CLIP 顶层：键名与 OpenAI 一致，没有 text_tower. 前缀、没有重复，
    换 dtype 之后塔与顶层仍是同一批参数。"""
    keys = list(tiny_model.state_dict())
    assert not any(k.startswith("text_tower.") for k in keys) and len(keys) == len(set(keys))
    assert tiny_model.text_tower.token_embedding is tiny_model.token_embedding
    assert tiny_model.text_tower.text_projection is tiny_model.text_projection
    tiny_model.double()
    assert tiny_model.text_tower.positional_embedding.dtype == torch.float64
    tokens = torch.tensor([[2, 10, 11, 3, 0]])
    with torch.no_grad():
        tiny_model.text_projection.mul_(2)  # 改顶层参数，塔里看到的也变了
    out = tiny_model.encode_text(tokens, normalize=False)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, tiny_model.text_tower(tokens))

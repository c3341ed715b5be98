"""预训练权重：open_clip（QuickGELU、随机权重、缩小宽度）存成三种格式，clipedu 读回后输出一致到 1e-5。"""
import os
import pickle
import warnings

import pytest
import torch

import clipedu
from clipedu.pretrained import english_tokenizer, infer_config, load_pretrained, read_state_dict

open_clip = pytest.importorskip("open_clip")  # 测试依赖，requirements.txt 已装
torch.set_num_threads(1)

VOCAB, CTX = 300, 16


def make_open_clip(arch: str):
    torch.manual_seed(0)
    text_cfg = dict(context_length=CTX, vocab_size=VOCAB, width=128, heads=2, layers=2)
    if arch == "vit":
        vision_cfg = dict(layers=2, width=128, patch_size=8, image_size=32)  # head_width 默认 64 → 2 头
        size = 32
    else:
        vision_cfg = dict(layers=(1, 1, 2, 1), width=16, image_size=64)  # 注意力池化 16·32/64 = 8 头
        size = 64
    m = open_clip.CLIP(64, vision_cfg, text_cfg, quick_gelu=True).eval()
    if arch == "resnet":  # 随机化 BN 统计量，让它们真正参与比较
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.data.normal_(1, 0.1)
    return m, size


def inputs(size, B=3):
    g = torch.Generator().manual_seed(1)
    img = torch.randn(B, 3, size, size, generator=g)
    tok = torch.randint(1, VOCAB - 1, (B, CTX), generator=g)
    for b, pos in enumerate([3, 7, CTX - 1]):  # OpenAI 约定：EOT 是最大 id，open_clip 在 argmax 处取句向量
        tok[b, pos] = VOCAB - 1
        tok[b, pos + 1:] = 0
    return img, tok


def check_matches(ours, ref, size):
    img, tok = inputs(size)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(img), ref.encode_image(img, normalize=True), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.encode_text(tok), ref.encode_text(tok, normalize=True), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.encode_image(img, normalize=False), ref.encode_image(img), rtol=1e-5, atol=1e-5)
    assert ours.logit_scale.item() == pytest.approx(ref.logit_scale.item())


@pytest.mark.parametrize("arch", ["vit", "resnet"])
@pytest.mark.parametrize("fmt", ["pt", "safetensors", "ddp-wrapped"])
def test_load_open_clip_matches(arch, fmt, tmp_path):
    ref, size = make_open_clip(arch)
    sd = ref.state_dict()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "ddp-wrapped":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    else:
        torch.save(sd, path)
    ours, preprocess = load_pretrained(path)
    assert ours.config.vision.arch == arch and ours.config.vision.image_size == size
    assert set(ours.state_dict()) == set(sd)  # 键名与 open_clip/OpenAI 逐一相同
    check_matches(ours, ref, size)
    from PIL import Image
    assert preprocess(Image.new("RGB", (90, 70))).shape == (3, size, size)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_load_torchscript_archive_without_running_code(arch, tmp_path, monkeypatch):
    ref, size = make_open_clip(arch)
    img, tok = inputs(size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ref, (img, tok), check_trace=False)  # OpenAI 发布的就是 trace 出的存档
    path = tmp_path / "ViT-tiny.pt"
    traced.save(str(path))

    def forbidden(*a, **k):
        raise AssertionError("不应调用 torch.jit.load：它会执行存档里的代码")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    ours, _ = load_pretrained(path)
    check_matches(ours, ref, size)


def test_infer_config_full_size_shapes():
    """在 meta 设备上造出 OpenAI ViT-B/32 与 RN50 形状的权重，推断出的结构与预设一致。"""
    for name, oc in [("vit-b-32", "ViT-B-32-quickgelu"), ("rn50", "RN50-quickgelu")]:
        with torch.device("meta"):
            sd = open_clip.create_model(oc, pretrained=None, device="meta").state_dict()
        cfg = infer_config(sd)
        want = clipedu.get_preset(name)
        assert cfg.vision == want.vision and cfg.embed_dim == want.embed_dim
        assert (cfg.text.vocab_size, cfg.text.context_length, cfg.text.eos_token_id) == (49408, 77, 49407)
        assert (cfg.text.width, cfg.text.heads, cfg.text.layers) == (512, 8, 12)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"text_projection": torch.zeros(2, 2), "evil": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="拒绝加载"):
        load_pretrained(path)
    assert not marker.exists()


def test_malicious_torchscript_like_archive_is_refused(tmp_path):
    import zipfile
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(_Payload(marker)))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
        z.writestr("evil/code/__torch__/m.py", "")
    with pytest.raises(pickle.UnpicklingError, match="拒绝加载.*posix.system|拒绝加载.*system"):
        read_state_dict(str(path))
    assert not marker.exists()


def test_bad_files_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="找不到权重文件"):
        load_pretrained(tmp_path / "missing.pt")
    p = tmp_path / "notclip.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    with pytest.raises(ValueError, match="不像 CLIP"):
        load_pretrained(p)
    ref, _ = make_open_clip("vit")
    sd = ref.state_dict()
    sd["visual.extra.weight"] = torch.zeros(1)
    torch.save(sd, p)
    with pytest.raises(ValueError, match="多余的键.*visual.extra.weight"):
        load_pretrained(p)


def test_english_tokenizer():
    tok = english_tokenizer()
    t = tok(["a photo of a cat"])
    assert t.shape == (1, 77) and t[0, 0].item() == 49406 and t.max().item() == 49407


@pytest.mark.parametrize("preset", ["tiny-cpu", "rn50", "vit-b-32", "cn-clip-rn50", "cn-clip-vit-b-16"])
def test_benchmark_twin_has_identical_parameters(preset):
    """吞吐基准里的对照模型（open_clip；BERT 文本塔对 cn_clip）与 clipedu 模型参数逐一同名同形（比较才公平）。"""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = clipedu.get_preset(preset)
    cfg = bench.shrink(cfg) if preset != "tiny-cpu" else cfg
    with torch.device("meta"):
        ours = {k: v.shape for k, v in clipedu.create_model(cfg).state_dict().items()}
        theirs = {k: v.shape for k, v in bench.twin(cfg)[1].state_dict().items()}
    assert ours == theirs


class _IntList:
    def __reduce__(self):
        import torch.jit._pickle
        return (torch.jit._pickle.build_intlist, ([1, 2, 3],))


def test_torchscript_container_tags_are_allowed(tmp_path):
    """TorchScript 给列表打的类型标签（torch.jit._pickle.build_intlist）可以读，且只当作数据。"""
    import zipfile
    path = tmp_path / "tags.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("m/data.pkl", pickle.dumps({"sizes": _IntList(), "text_projection": None}, protocol=2))
        z.writestr("m/constants.pkl", pickle.dumps(()))
    with pytest.raises(ValueError, match="没有找到 state dict"):  # 没有张量，但标签本身没有被拒绝
        read_state_dict(str(path))

"""--init-from 接受 OpenAI/open_clip 权重：图像塔与文本 Transformer 照搬，词表换成中文（第 9 章 faq-finetune）。"""
import pytest
import torch

from clipedu.tokenizer import VOCAB_SIZE
from clipedu.trainer import train
from tiny import tiny_dataset, tiny_train_config

open_clip = pytest.importorskip("open_clip")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_init_from_open_clip_weights_keeps_towers_and_swaps_vocab(tmp_path, suffix):
    torch.manual_seed(0)
    ref = open_clip.CLIP(32, dict(layers=1, width=64, patch_size=4, image_size=16, head_width=32),
                         dict(context_length=16, vocab_size=500, width=64, heads=2, layers=1), quick_gelu=True)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / f"openclip{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    # lr=0 且锁住图像塔：只检查载入，不让更新掩盖结果
    cfg = tiny_train_config(tmp_path / "run", steps=1, batch_size=8, lr=0.0, lock_image=True, init_from=str(path))
    train(cfg, train_dataset=tiny_dataset(64))
    out = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    model = out["model"]
    assert model["token_embedding.weight"].shape == (VOCAB_SIZE, 64)         # 中文词表
    assert out["config"]["text"]["eos_token_id"] == 3                          # [EOS]
    for key in ("visual.conv1.weight", "visual.proj", "transformer.resblocks.0.attn.in_proj_weight",
                "positional_embedding", "text_projection", "ln_final.weight"):
        assert torch.equal(model[key], sd[key]), key

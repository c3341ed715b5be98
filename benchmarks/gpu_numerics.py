"""GPU 上的数值检查：bf16 autocast 与 fp32 一致、SDPA 走融合注意力核、channels_last 不改结果。

    python benchmarks/gpu_numerics.py --json out.json

只在有 CUDA 的机器上有意义；由 benchmarks/gpu_check.sh 调用。每一项都是会失败的断言。
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

import clipedu


def _batch(cfg, B, device):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(B, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g).to(device)
    tok = clipedu.ChineseTokenizer(context_length=cfg.text.context_length)
    tokens = tok([f"第{i}张图：红色的圆形和蓝色的三角形" for i in range(B)]).to(device)
    return images, tokens


@torch.no_grad()
def check_autocast(preset: str, device) -> dict:
    model = clipedu.create_model(preset).to(device).eval()
    images, tokens = _batch(model.config, 16, device)
    img32, txt32, _ = model(images, tokens)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        img16, txt16, _ = model(images, tokens)
    cos_img = F.cosine_similarity(img32, img16.float(), dim=-1).min().item()
    cos_txt = F.cosine_similarity(txt32, txt16.float(), dim=-1).min().item()
    assert cos_img > 0.99 and cos_txt > 0.99, (cos_img, cos_txt)
    return {"preset": preset, "min_cos_image": cos_img, "min_cos_text": cos_txt}


@torch.no_grad()
def check_sdpa_kernel(device) -> dict:
    model = clipedu.create_model("vit-b-32").to(device).eval()
    images, tokens = _batch(model.config, 32, device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(images, tokens)
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if "attention" in e.name.lower() or "flash" in e.name.lower()
                    or "fmha" in e.name.lower()})
    fused = [n for n in names if any(k in n.lower() for k in ("flash", "efficient", "fmha", "cudnn"))]
    assert fused, f"没有看到融合注意力核：{names}"
    return {"attention_kernels": names[:8]}


@torch.no_grad()
def check_channels_last(device) -> dict:
    cfg = clipedu.get_preset("rn50")
    model = clipedu.create_model(cfg).to(device).eval()
    images, _ = _batch(cfg, 8, device)
    ref = model.encode_image(images)
    model = model.to(memory_format=torch.channels_last)
    got = model.encode_image(images.contiguous(memory_format=torch.channels_last))
    err = (ref - got).abs().max().item()
    assert err < 1e-3, err
    return {"channels_last_max_abs_diff": err}


def check_train_step_bf16(device) -> dict:
    """一步 amp_bf16 训练：损失与 fp32 接近，fused AdamW 可用。"""
    torch.manual_seed(0)
    model = clipedu.create_model("tiny-cpu").to(device)
    images, tokens = _batch(model.config, 64, device)
    loss32 = clipedu.clip_loss(*model(images, tokens))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss16 = clipedu.clip_loss(*model(images, tokens))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    loss16.backward()
    opt.step()
    assert abs(loss32.item() - loss16.item()) < 0.05 * loss32.item(), (loss32.item(), loss16.item())
    return {"loss_fp32": loss32.item(), "loss_amp_bf16": loss16.item(), "fused_adamw": True}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("没有 CUDA 设备：这个脚本只在 GPU 上运行")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, fn in [("autocast_vit_b_32", lambda: check_autocast("vit-b-32", device)),
                     ("autocast_rn50", lambda: check_autocast("rn50", device)),
                     ("sdpa", lambda: check_sdpa_kernel(device)),
                     ("channels_last", lambda: check_channels_last(device)),
                     ("train_step_bf16", lambda: check_train_step_bf16(device))]:
        out[name] = fn()
        print(name, out[name], flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()

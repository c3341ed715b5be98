"""GPU 上的训练引擎自检（CUDA 路径：autocast、GradScaler、TF32、fused AdamW、channels_last、compile）。

    python scripts/gpu_train_check.py [--out runs/gpu_check]

每种设定训练几十步，打印损失是否下降、pairs/s 与峰值显存；任何一项失败则以非零状态退出。
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipedu.config import CLIPConfig, TextConfig, TrainConfig, VisionConfig  # noqa: E402
from clipedu.trainer import train  # noqa: E402


def small_resnet() -> CLIPConfig:
    return CLIPConfig(embed_dim=128, vision=VisionConfig(arch="resnet", image_size=64, patch_size=0, width=32,
                                                          layers=(1, 1, 1, 1), heads=4),
                      text=TextConfig(context_length=32, width=128, heads=4, layers=2))


CASES = [
    ("tiny-fp32", dict(precision="fp32")),
    ("tiny-amp_bf16", dict(precision="amp_bf16")),
    ("tiny-amp_fp16", dict(precision="amp_fp16")),
    ("tiny-bf16", dict(precision="bf16")),
    ("tiny-amp_bf16-accum-ckpt", dict(precision="amp_bf16", accum_steps=4, grad_checkpointing=True)),
    ("tiny-amp_bf16-compile", dict(precision="amp_bf16", compile=True)),
    ("resnet-amp_bf16-channels_last", dict(precision="amp_bf16", model=small_resnet())),
]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("没有 CUDA GPU，跳过")
        return 1
    results, failed = {}, []
    for name, kw in CASES:
        torch.cuda.reset_peak_memory_stats()
        cfg = TrainConfig(out_dir=f"{args.out}/{name}", overwrite=True,  # 重跑时覆盖上一次的检查
                          steps=args.steps, batch_size=256, lr=2e-3,
                          warmup_steps=10, eval_size=500, progress=False, device="cuda", **kw)
        t0 = time.perf_counter()
        try:
            history = train(cfg)
            metrics = json.loads(Path(cfg.out_dir, "metrics.json").read_text())
            first, last = history[0]["loss"], sum(r["loss"] for r in history[-5:]) / 5
            ok = last < first - 0.3
            results[name] = dict(ok=ok, first_loss=round(first, 3), last_loss=round(last, 3),
                                 pairs_per_s=round(metrics["pairs_per_s"]), wall_s=round(time.perf_counter() - t0, 1),
                                 peak_mem_mib=round(torch.cuda.max_memory_allocated() / 2**20),
                                 heldout=round(metrics.get("zero_shot_top1_heldout", -1), 3))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            results[name] = dict(ok=False, error=traceback.format_exc(limit=2)[-400:])
        if not results[name]["ok"]:
            failed.append(name)
        print(name, json.dumps(results[name], ensure_ascii=False), flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(), "failed": failed}, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

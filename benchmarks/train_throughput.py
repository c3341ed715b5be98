"""训练吞吐（图文对/秒）：clipedu 与 open_clip 同结构、同批、同优化器、同精度，在一次运行里交替测量。

Chinese-CLIP 的预设（``cn-clip-*``，BERT 文本塔）的对照是 ``cn_clip`` 自己的 CLIP，形状相同、参数逐一同名同形。

一步 = 前向、对称 InfoNCE 损失、反向、AdamW 更新。两边用同一份随机批数据与同一个损失函数，
按轮次交替（A B B A …）计时，取各轮中位数，尽量抵消机器被他人占用时的波动。
每步 FLOPs 由 torch.utils.flop_counter 数出（前向 + 反向）。CUDA 上报告 MFU（对厂商标称峰值）与峰值显存；
CPU 上报告“实测峰值占比”：FLOPs ÷ 时间 ÷ 同一次运行里实测的方阵乘峰值（同精度、同线程数）。

``--user-path``：用户实际跑的路径——几何图形世界的真实中文标题，clipedu 截掉全是 [PAD] 的尾部列
（``ChineseTokenizer.trim_padding``，训练循环默认这样做），open_clip 按它的习惯填满整个上下文。
两边计算量不同，比较的是用户感受到的速度；不加这个选项时两边的输入完全相同。

    python benchmarks/train_throughput.py --preset tiny-cpu --batch-size 128
    python benchmarks/train_throughput.py --preset tiny-cpu --batch-size 128 --precision fp32 --user-path
    python benchmarks/train_throughput.py --preset vit-b-32 --shrink --precision fp32,bf16
    python benchmarks/train_throughput.py --preset vit-b-32 --batch-size 256 --precision bf16 --device cuda
    python benchmarks/train_throughput.py --preset cn-clip-vit-b-16 --shrink --batch-size 32   # BERT 对 cn_clip
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import clipedu  # 先于 torch：OpenMP 线程等活时只短暂自旋
import torch

from clipedu.benchmarking import (machine_info, matmul_gflops_per_cpu_s,
                                  matmul_peak_gflops)
from clipedu.loss import clip_loss

# 稠密 bf16 峰值算力（TFLOPS），用于 MFU；fp32 在 CUDA 上按 TF32 峰值（约一半）计
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def shrink(cfg: clipedu.CLIPConfig) -> clipedu.CLIPConfig:
    """缩小版：ViT 宽 256、4 层、64 px；ResNet 宽 32、64 px；文本宽 256、4 层。"""
    v, t = cfg.vision, cfg.text
    if v.arch == "vit":
        v.width, v.layers, v.heads, v.image_size = 256, 4, 4, 64
    else:
        v.width, v.heads, v.image_size = 32, 16, 64
    t.width, t.layers, t.heads = 256, 4, 4
    cfg.embed_dim = 256
    return cfg


def open_clip_twin(cfg: clipedu.CLIPConfig):
    """用 open_clip.CLIP 搭一个结构完全相同的模型（键名、形状都一样）。"""
    import open_clip
    v, t = cfg.vision, cfg.text
    if v.arch == "vit":
        vision = dict(layers=v.layers, width=v.width, head_width=v.width // v.heads, mlp_ratio=v.mlp_ratio,
                      patch_size=v.patch_size, image_size=v.image_size)
    else:
        vision = dict(layers=tuple(v.layers), width=v.width, head_width=v.width * 32 // v.heads,
                      image_size=v.image_size)
    text = dict(context_length=t.context_length, vocab_size=t.vocab_size, width=t.width, heads=t.heads,
                layers=t.layers, mlp_ratio=t.mlp_ratio)
    return open_clip.CLIP(cfg.embed_dim, vision, text, quick_gelu=cfg.quick_gelu)


def cn_clip_twin(cfg: clipedu.CLIPConfig):
    """用 cn_clip 的 CLIP 搭一个与 BERT 文本塔的 clipedu 模型结构相同的模型（键名、形状都一样）。

    cn_clip 按头宽 64 定头数（ViT 宽/64、ResNet 宽×32/64、BERT 宽/64），与 clipedu 的 cn-clip 预设一致。"""
    from cn_clip.clip.model import CLIP as CnCLIP

    v, t = cfg.vision, cfg.text
    vision = dict(image_resolution=v.image_size, vision_width=v.width,
                  vision_layers=v.layers if v.arch == "vit" else list(v.layers),
                  vision_patch_size=v.patch_size if v.arch == "vit" else None)
    text = dict(vocab_size=t.vocab_size, text_attention_probs_dropout_prob=t.dropout, text_hidden_act="gelu",
                text_hidden_dropout_prob=t.dropout, text_hidden_size=t.width, text_initializer_range=0.02,
                text_intermediate_size=int(t.mlp_ratio * t.width), text_max_position_embeddings=t.max_positions,
                text_num_attention_heads=t.heads, text_num_hidden_layers=t.layers,
                text_type_vocab_size=t.type_vocab_size)
    return CnCLIP(embed_dim=cfg.embed_dim, **vision, **text)


def twin(cfg: clipedu.CLIPConfig):
    """对照模型与它的名字：BERT 文本塔对 cn_clip，其余对 open_clip。"""
    if cfg.text.arch == "bert":
        return "cn_clip", cn_clip_twin(cfg)
    return "open_clip", open_clip_twin(cfg)


def user_batch(cfg: clipedu.CLIPConfig, batch_size: int, device: torch.device):
    """真实标题：clipedu 截掉 [PAD] 尾部列，open_clip 填满上下文。返回 (图像, clipedu 词元, open_clip 词元)。"""
    from clipedu.data import ShapesDataset
    from clipedu.tokenizer import ChineseTokenizer
    ds = ShapesDataset("train", size=max(batch_size, 1024), image_size=cfg.vision.image_size)
    images, captions, _ = ds.get_batch(range(batch_size))
    tok = ChineseTokenizer(context_length=cfg.text.context_length)
    full = tok(captions, context_length=cfg.text.context_length)
    return images.to(device), tok.trim_padding(full).to(device), full.to(device)


def make_batch(cfg: clipedu.CLIPConfig, batch_size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    L = cfg.text.context_length
    tokens = torch.randint(4, min(cfg.text.vocab_size, 1000), (batch_size, L), generator=g)
    if cfg.text.arch == "bert":  # [CLS] … [SEP] [PAD]…：BERT 词表里 [CLS]=101、[SEP]=102、[PAD]=0
        tokens[:, 0], tokens[:, L // 2] = 101, 102
    else:
        tokens[:, L // 2] = cfg.text.eos_token_id
    tokens[:, L // 2 + 1:] = 0
    return images.to(device), tokens.to(device)


class Runner:
    """一个模型 + 它的 AdamW + 一个训练步；保留未编译的原模块 raw。"""

    def __init__(self, name, raw, device, precision, compile_):
        self.name, self.raw, self.device, self.precision = name, raw.to(device).train(), device, precision
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(raw.parameters(), lr=1e-4, weight_decay=0.1, fused=fused)
        self.model = torch.compile(raw) if compile_ else raw
        self.rounds: list[float] = []      # 每轮的 图文对/秒（墙钟）
        self.cpu_rounds: list[float] = []  # 每轮的 图文对/CPU 秒：CPU 被他人占用时比墙钟稳定

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, images, tokens):
        with self.autocast():
            img, txt, scale = self.model(images, tokens)[:3]
            loss = clip_loss(img.float(), txt.float(), scale.float())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def timed(self, images, tokens, steps):
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = self.step(images, tokens)
        loss.item()
        sync()
        pairs = steps * images.shape[0]
        self.rounds.append(pairs / (time.perf_counter() - t0))
        self.cpu_rounds.append(pairs / (time.process_time() - c0))

    def flops_per_step(self, images, tokens) -> float:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc:
            self.step(images, tokens)
        return float(fc.get_total_flops())


def peak_tflops(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tf in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tf if precision == "bf16" else tf / 2
    return None


def bench_precision(args, cfg, device, precision) -> dict:
    if args.user_path:
        images, tokens, theirs_tokens = user_batch(cfg, args.batch_size, device)
    else:
        images, tokens = make_batch(cfg, args.batch_size, device)
        theirs_tokens = tokens
    torch.manual_seed(0)
    ours, (twin_name, theirs) = clipedu.create_model(cfg), twin(cfg)
    if args.channels_last:  # 两边都把卷积权重和输入换成 NHWC
        ours.to_channels_last()
        theirs.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    runners = [Runner("clipedu", ours, device, precision, args.compile),
               Runner(twin_name, theirs, device, precision, args.compile)]
    toks = {"clipedu": tokens, twin_name: theirs_tokens}
    for r in runners:  # 预热：编译、内核选择、分配器缓存
        for _ in range(args.warmup):
            r.step(images, toks[r.name])
    for i in range(args.rounds):
        for r in (runners if i % 2 == 0 else runners[::-1]):
            r.timed(images, toks[r.name], args.steps)
    out = {"precision": precision, "batch_size": args.batch_size, "user_path": args.user_path, "twin": twin_name,
           "text_len": {k: int(v.shape[1]) for k, v in toks.items()}}
    tflops = peak_tflops(device, precision, args.peak_tflops)
    if tflops is None and device.type == "cpu":  # CPU：同一次运行里实测的方阵乘峰值
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        out["measured_matmul_peak_gflops"] = matmul_peak_gflops(dtype=dtype)
        out["measured_matmul_gflops_per_cpu_s"] = matmul_gflops_per_cpu_s(dtype=dtype)
        tflops = out["measured_matmul_peak_gflops"] / 1000
    for r, other in zip(runners, runners[::-1]):
        tokens = toks[r.name]
        out[f"{r.name}_pairs_per_s"] = statistics.median(r.rounds)
        out[f"{r.name}_rounds"] = [round(x, 1) for x in r.rounds]
        if device.type == "cpu":
            out[f"{r.name}_pairs_per_cpu_s"] = statistics.median(r.cpu_rounds)
        if device.type == "cuda":
            out[f"{r.name}_peak_mem_gib"] = peak_memory(r, other, images, tokens, device)
        if tflops:
            flops = r.flops_per_step(images, tokens)
            steps_per_s = out[f"{r.name}_pairs_per_s"] / args.batch_size
            out[f"{r.name}_gflop_per_step"] = flops / 1e9
            out[f"{r.name}_mfu"] = flops * steps_per_s / (tflops * 1e12)
            if device.type == "cpu":  # 按 CPU 时间的峰值占比：机器被占用时也可信
                steps_per_cpu_s = out[f"{r.name}_pairs_per_cpu_s"] / args.batch_size
                out[f"{r.name}_peak_fraction_cpu_time"] = (flops * steps_per_cpu_s
                                                           / (out["measured_matmul_gflops_per_cpu_s"] * 1e9))
    out["ratio"] = out["clipedu_pairs_per_s"] / out[f"{twin_name}_pairs_per_s"]
    if device.type == "cpu":
        out["cpu_time_ratio"] = out["clipedu_pairs_per_cpu_s"] / out[f"{twin_name}_pairs_per_cpu_s"]
    return out


def resident_bytes(runner: Runner) -> int:
    """参数与优化器状态占的字节（梯度已 set_to_none）。"""
    tensors = list(runner.raw.parameters()) + list(runner.raw.buffers())
    tensors += [v for st in runner.opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


def peak_memory(runner: Runner, other: Runner, images, tokens, device) -> float:
    """这一模型一步训练的峰值显存（GiB），扣掉同时驻留的另一个模型的参数与优化器状态。"""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    runner.step(images, tokens)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - resident_bytes(other)) / 2 ** 30


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="clipedu vs open_clip training throughput")
    p.add_argument("--preset", default="tiny-cpu", choices=list(clipedu.PRESETS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="fp32,bf16", help="fp32、bf16 或逗号分隔的多个")
    p.add_argument("--steps", type=int, default=5, help="每轮计时的步数")
    p.add_argument("--rounds", type=int, default=4, help="交替计时的轮数，取中位数")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="两边都用 torch.compile")
    p.add_argument("--channels-last", action="store_true", help="两边的卷积塔都用 channels_last")
    p.add_argument("--shrink", action="store_true", help="缩小宽度/层数/分辨率（CPU 上测大预设）")
    p.add_argument("--threads", type=int, default=None, help="CPU 线程数（默认 torch 的默认值）")
    p.add_argument("--peak-tflops", type=float, default=None, help="手动给出峰值算力以计算 MFU")
    p.add_argument("--user-path", action="store_true",
                   help="真实标题：clipedu 截掉 [PAD] 尾部列，open_clip 填满上下文（用户实际的训练路径）")
    p.add_argument("--json", default=None, help="把结果写成 JSON 文件")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":  # 两边同样打开 TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = clipedu.get_preset(args.preset)
    cfg = shrink(cfg) if args.shrink else cfg
    if args.user_path and cfg.text.arch == "bert":
        raise SystemExit("--user-path 只用于内置中文字符分词器的预设；cn-clip-* 预设用随机词元批")
    name = args.preset + ("-shrunk" if args.shrink else "") + ("-user-path" if args.user_path else "")
    print("机器：" + json.dumps(machine_info(), ensure_ascii=False), flush=True)
    results = []
    for precision in args.precision.split(","):
        r = bench_precision(args, cfg, device, precision)
        r.update(preset=name, device=str(device), threads=torch.get_num_threads(), compile=args.compile,
                 channels_last=args.channels_last, machine=machine_info())
        results.append(r)
        o = r["twin"]
        line = (f"{name:18s} {precision:5s} B={args.batch_size:<4d} clipedu {r['clipedu_pairs_per_s']:9.1f} pairs/s"
                f" | {o} {r[o + '_pairs_per_s']:9.1f} pairs/s | ratio {r['ratio']:.3f}")
        if "cpu_time_ratio" in r:
            line += (f" || per CPU-second {r['clipedu_pairs_per_cpu_s']:.1f} vs {r[o + '_pairs_per_cpu_s']:.1f}"
                     f", ratio {r['cpu_time_ratio']:.3f}")
        if "clipedu_mfu" in r:
            what = "of measured matmul peak" if device.type == "cpu" else "MFU"
            line += f" | {what} {r['clipedu_mfu']:.1%} vs {r[o + '_mfu']:.1%}"
        if "measured_matmul_peak_gflops" in r:
            line += (f" (peak {r['measured_matmul_peak_gflops']:.0f} GFLOP/s) | by CPU time "
                     f"{r['clipedu_peak_fraction_cpu_time']:.1%} vs {r[o + '_peak_fraction_cpu_time']:.1%}"
                     f" (of {r['measured_matmul_gflops_per_cpu_s']:.0f} GFLOP/CPU·s)")
        if args.user_path:
            line += f" | text len {r['text_len']['clipedu']} vs {r['text_len'][o]}"
        if "clipedu_peak_mem_gib" in r:
            line += f" | peak {r['clipedu_peak_mem_gib']:.2f} vs {r[o + '_peak_mem_gib']:.2f} GiB"
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()

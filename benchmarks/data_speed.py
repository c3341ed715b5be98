"""内置数据的生成速度（单核）：几何图形世界要求 ≥ 5,000 张/秒（32 px）；另报训练循环里每批的数据 CPU 代价。

用法：python benchmarks/data_speed.py [--n 20000] [--image-size 32]
在一个核上冷启动渲染 n 张图（参数抽样 + SDF 渲染 + CLIP 归一化），报告每秒张数。
"""
import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from clipedu.data import ShapesDataset  # noqa: E402
from clipedu.labs.vqa import ShapesVQADataset  # noqa: E402


def bench(make, n: int) -> float:
    ds = make(n)
    t0 = time.perf_counter()
    for start in range(0, n, 512):
        ds.get_batch(range(start, min(n, start + 512)))
    return n / (time.perf_counter() - t0)


def train_loop_batch_cost(image_size: int, batch: int = 128, n_batches: int = 40) -> dict:
    """训练循环里每批的数据代价（CPU 毫秒，不受别的进程抢占影响）：取批（首轮含渲染）与分词 + 截 [PAD]。

    与 benchmarks/threads_under_load.py 的“每步 CPU 时间”（tiny-cpu 约 600 ms）对比，就知道数据占一步的几成。
    """
    from clipedu.sampler import GlobalBatchSampler
    from clipedu.tokenizer import ChineseTokenizer
    ds = ShapesDataset("train", image_size=image_size)
    tok = ChineseTokenizer(context_length=32)
    it = iter(GlobalBatchSampler(len(ds), batch, 0, 1, seed=0))
    first = [next(it) for _ in range(n_batches)]
    c0 = time.process_time()
    captions = [ds.get_batch(idx)[1] for idx in first]          # 第一轮：要渲染
    c1 = time.process_time()
    for idx in first:
        ds.get_batch(idx)                                        # 之后几轮：块已缓存
    c2 = time.process_time()
    for caps in captions:
        tok.trim_padding(tok(caps))
    c3 = time.process_time()
    ms = lambda a, b: round(1000 * (b - a) / n_batches, 2)  # noqa: E731
    return {"batch": batch, "get_batch_first_epoch_cpu_ms": ms(c0, c1), "get_batch_cached_cpu_ms": ms(c1, c2),
            "tokenize_trim_cpu_ms": ms(c2, c3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    s = args.image_size
    results = {
        "shapes_1obj_img_per_s": bench(lambda n: ShapesDataset("train", size=n, image_size=s), args.n),
        "shapes_3obj_img_per_s": bench(lambda n: ShapesDataset("train", size=n, image_size=s, max_objects=3), args.n),
        "vqa_img_per_s": bench(lambda n: ShapesVQADataset("train", size=n, image_size=s), args.n),
    }
    # 缓存命中后（第二轮）的速度：训练多轮时的情形
    ds = ShapesDataset("train", size=args.n, image_size=s)
    ds.get_batch(range(args.n))
    t0 = time.perf_counter()
    ds.get_batch(range(args.n))
    results["shapes_cached_img_per_s"] = args.n / (time.perf_counter() - t0)
    results = {k: round(v) for k, v in results.items()}
    results.update(train_loop_batch_cost(s))
    print(json.dumps({"n": args.n, "image_size": s, **results}, ensure_ascii=False))
    if s == 32 and results["shapes_1obj_img_per_s"] < 5000:
        print("警告：低于 5,000 张/秒的目标（机器繁忙时可能如此，请空闲时重测）")


if __name__ == "__main__":
    main()

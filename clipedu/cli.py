"""命令行：``python -m clipedu train|eval|data``，是 ``train(cfg)`` 与评估函数上的薄薄一层（见第 5 章 sec-code-cli）。

例::

    python -m clipedu train --preset tiny-cpu --out runs/tiny --steps 600
    torchrun --nproc_per_node=2 -m clipedu train --preset small --batch-size 256 --precision amp_bf16
    python -m clipedu eval --checkpoint runs/tiny/last.pt --json
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from . import argtypes
from .argtypes import MAX_EVAL_SIZE, MAX_SEED

# (旗标, TrainConfig 字段, 类型, 帮助)；默认值一律取 TrainConfig 的，命令行只覆盖给出的项
_TRAIN_FLAGS = [
    ("--preset", "preset", str, "模型预设：tiny-cpu | small | rn50 | vit-b-32"
     " | vit-b-16 | cn-clip-rn50 | cn-clip-vit-b-16 | …"),
    ("--out", "out_dir", str, "输出目录（last.pt、metrics.json、log.jsonl）；默认 runs/<preset>"),
    ("--steps", "steps", int, "优化器步数"),
    ("--time-budget", "time_budget", float, "训练时间上限（秒），到时保存并停止"),
    ("--batch-size", "batch_size", int, "全局批大小（所有进程、所有累积微批之和）"),
    ("--lr", "lr", float, "峰值学习率"),
    ("--weight-decay", "weight_decay", float, "AdamW 权重衰减"),
    ("--warmup-steps", "warmup_steps", int, "线性预热步数"),
    ("--grad-clip", "grad_clip", float, "梯度范数裁剪阈值"),
    ("--ema-decay", "ema_decay", float, "参数 EMA 的衰减率上限，如 0.999（0：不用）；评估与保存用平均后的参数"),
    ("--seed", "seed", int, "运行种子"),
    ("--device", "device", str, "auto | cpu | cuda"),
    ("--precision", "precision", str, "fp32 | bf16 | fp16 | amp_bf16 | amp_fp16"),
    ("--accum-steps", "accum_steps", int, "对比学习式梯度累积的微批数"),
    ("--save-every", "save_every", int, "每 N 步保存 ckpt_step{N}.pt"),
    ("--keep-last", "keep_last", int, "保留最近 K 个按步保存的检查点"),
    ("--resume", "resume", str, "latest 或检查点路径"),
    ("--eval-every", "eval_every", int, "每 N 步评估一次（0：只在结束时）"),
    ("--eval-size", "eval_size", int, "评估样本数（0：不评估）"),
    ("--log-every", "log_every", int, "每 N 步写一行 log.jsonl"),
    ("--dataset", "dataset", str, "shapes | digits | csv | cn-clip | wds"),
    ("--data-path", "data_path", str, "真实数据的本地路径"),
    ("--max-objects", "max_objects", int, "几何图形世界每张图的物体数上限（1–3）"),
    ("--num-workers", "num_workers", int, "DataLoader 进程数"),
    ("--max-bad-fraction", "max_bad_fraction", float, "坏样本比例上限"),
    ("--init-from", "init_from", str, "从检查点或预训练权重初始化（微调）"),
    ("--head-lr-mult", "head_lr_mult", float, "投影头与 logit_scale 的学习率倍数"),
    ("--image-lr-mult", "image_lr_mult", float,
     "图像塔（投影头除外）的学习率倍数，如 0.1"),
    ("--csv-img-key", "csv_img_key", str, "--dataset csv：图像路径列名（默认 filepath）"),
    ("--csv-caption-key", "csv_caption_key", str, "--dataset csv：文本列名（默认 title）"),
    ("--csv-separator", "csv_separator", str, "--dataset csv：分隔符；默认按扩展名（.csv 逗号，.tsv 制表符）"),
    ("--encoding", "encoding", str, "--dataset csv：表格编码，如 gb18030（GBK 文件）"),
]
# (旗标, 字段, 设成的值, 帮助)
_SWITCHES = [
    ("--grad-checkpointing", "grad_checkpointing", True, "两个塔都用激活重算换显存"),
    ("--compile", "compile", True, "用 torch.compile 编译模型"),
    ("--tensorboard", "tensorboard", True, "同时写 TensorBoard 日志（out/tensorboard）"),
    ("--local-loss", "local_loss", True, "分布式：每个进程只算自己的行与列"),
    ("--no-gather-with-grad", "gather_with_grad", False, "分布式：收集来的特征不带梯度（近似）"),
    ("--lock-image", "lock_image", True, "冻结图像塔（LiT 式微调）"),
    ("--strict", "strict", True, "真实数据：遇到第一个坏样本就报错"),
    ("--no-progress", "progress", False, "不显示进度条"),
    ("--overwrite", "overwrite", True, "--out 里已有一次训练时，删除它的检查点与日志，从头开始（默认拒绝）"),
]


class _Parser(argparse.ArgumentParser):
    """参数错误也是一行中文说明（带英文关键词），退出码 2，不打印整页用法。"""

    def error(self, message: str):
        self.exit(2, f"错误：命令行参数有误：{message}（运行 {self.prog} -h 查看用法） / usage error\n")


# 旗标的 argparse 类型：文件、设备、编码与分隔符当场检查；数值范围由 TrainConfig.validate 检查（API 同样受益）
_TRAIN_TYPES = {"init_from": argtypes.regular_file, "resume": argtypes.resume, "device": argtypes.device,
                "encoding": argtypes.encoding, "csv_separator": argtypes.separator}


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="训练 CLIP", argument_default=argparse.SUPPRESS)
    for flag, dest, typ, help_ in _TRAIN_FLAGS:
        typ = _TRAIN_TYPES.get(dest, argtypes.finite_float if typ is float else typ)
        p.add_argument(flag, dest=dest, type=typ, help=help_)
    for flag, dest, value, help_ in _SWITCHES:
        p.add_argument(flag, dest=dest, action="store_const", const=value, help=help_)
    p.set_defaults(func=_cmd_train)


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="评估检查点（零样本与检索）")
    p.add_argument("--checkpoint", required=True, type=argtypes.regular_file,
                   help="clipedu 检查点（.pt），或 Chinese-CLIP 权重"
                        "（.pt/.safetensors）")
    p.add_argument("--json", action="store_true", help="只打印一个 JSON 对象")
    p.add_argument("--dataset", default="shapes", choices=("shapes", "imagefolder", "cifar10", "cifar100", "cn-clip"),
                   help="shapes（默认）| imagefolder | cifar10 | cifar100 | cn-clip（后四个需要 --root）")
    p.add_argument("--root", default=None, help="评估数据集的本地目录")
    p.add_argument("--eval-size", type=argtypes.int_in(1, MAX_EVAL_SIZE), default=1000,
                   help=f"shapes 评估的样本数（≤ {MAX_EVAL_SIZE}）")
    p.add_argument("--seed", type=argtypes.int_in(0, MAX_SEED), default=0, help="shapes 评估数据的种子")
    p.add_argument("--device", type=argtypes.device, default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-bad-fraction", type=argtypes.fraction, default=0.01,
                   help="坏样本比例上限（真实数据集）")
    p.add_argument("--strict", action="store_true", help="遇到第一个坏样本就报错")
    p.set_defaults(func=_cmd_eval)


def _add_data_parser(sub, full: bool) -> None:
    """``python -m clipedu data ...`` 由 clipedu.data.shard 提供；只在用到时才导入它。"""
    if not full:
        sub.add_parser("data", help="数据工具：把图文数据打成 WebDataset 分片等（python -m clipedu data -h）")
        return
    try:
        from .data.shard import add_shard_parser
    except ImportError as e:
        p = sub.add_parser("data", help="数据工具（需要 clipedu.data.shard）")
        p.set_defaults(func=lambda args: _fail(f"data 子命令不可用：{e}"))
        return
    p = sub.add_parser("data", help="数据工具：把图文数据打成 WebDataset 分片等")
    add_shard_parser(p.add_subparsers(dest="data_command", required=True, metavar="shard"))


def build_parser(with_data: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m clipedu", description="clipedu：CLIP 教学实现的命令行")
    # metavar：缺子命令时的报错列出可选的子命令，而不是内部的变量名 “command”
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,data,index,serve,export}")
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_data_parser(sub, with_data)
    from .search.cli import add_parsers as _add_search_parsers  # index / serve / export（见第 6 章 sec-service）
    _add_search_parsers(sub)
    return parser


def budget_recipe(given: dict) -> dict:
    """限时训练时替用户补上的配方项（config.BUDGET_RECIPES）：只补命令行没有显式给出的。

    条件：给了 --time-budget、用内置的几何图形数据、不是从已有权重微调（--init-from）。
    """
    from .config import BUDGET_RECIPES, TrainConfig

    if "time_budget" not in given or "init_from" in given or given.get("dataset", "shapes") != "shapes":
        return {}
    recipe = BUDGET_RECIPES.get(given.get("preset", TrainConfig.preset), {})
    return {k: v for k, v in recipe.items() if k not in given}


def config_from_args(args: argparse.Namespace):
    """命令行里给出的项覆盖 TrainConfig 的默认值。

    限时训练时再补上预设的配方（见 budget_recipe）。
    """
    from .config import TrainConfig

    not_config = {"func", "command"}
    overrides = {k: v for k, v in vars(args).items() if k not in not_config}
    preset = overrides.get("preset", TrainConfig.preset)
    overrides.setdefault("out_dir", f"runs/{preset}")
    overrides.update(budget_recipe(overrides))
    return TrainConfig(**overrides)


def _check_flag_combinations(given: dict) -> None:
    """给出了却不会起作用的旗标：报错，而不是悄悄忽略（用户以为它生效了）。"""
    from .errors import UsageError

    dataset = given.get("dataset", "shapes")
    csv_flags = [f for f in ("csv_img_key", "csv_caption_key", "csv_separator", "encoding") if f in given]
    problems = []
    if csv_flags and dataset != "csv":
        problems.append(f"{', '.join('--' + f.replace('_', '-') for f in csv_flags)} 只用于 --dataset csv")
    if "max_objects" in given and dataset != "shapes":
        problems.append("--max-objects 只用于 --dataset shapes")
    if "data_path" in given and dataset in ("shapes", "digits"):
        problems.append(f"--dataset {dataset} 是内置数据，不读 --data-path")
    if "init_from" in given and "preset" in given:
        problems.append("--init-from 的模型结构来自那个文件，--preset 不起作用")
    if problems:
        raise UsageError("；".join(problems) + "。请去掉不起作用的旗标 / flag has no effect")


def _cmd_train(args) -> int:
    from .trainer import train

    _check_flag_combinations(vars(args))
    cfg = config_from_args(args)
    filled = budget_recipe(vars(args))
    if filled:
        flag_of = {dest: flag for flag, dest, *_ in _TRAIN_FLAGS}
        items = "、".join(f"{flag_of[k]} {v}" for k, v in filled.items())
        print(f"[clipedu] {cfg.preset} 限时训练的配方（第 5 章 sec-time-budget）：{items}；显式给出这些旗标即可改用别的值")
    history = train(cfg)  # 输出目录的锁与“不覆盖”规则都在 train 里：API 与命令行一样
    if history:
        print(f"完成 {history[-1]['step']} 步，最终损失 {history[-1]['loss']:.4f}；输出在 {cfg.out_dir}")
    return 0


def _cmd_eval(args) -> int:
    from .eval_tasks import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.dataset, args.root, args.eval_size,
                                  args.seed, args.device, args.strict,
                                  args.max_bad_fraction)
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False))
    else:
        for key, value in metrics.items():
            print(f"{key:>40s}  {value:.4f}" if isinstance(value, float) else f"{key:>40s}  {value}")
    return 0


def _fail(message: str) -> int:
    print(f"错误：{message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """命令行入口。任何错误都只打印一行中文说明（映射见 clipedu.errors）：用法错误退出码 2，
    运行失败 1，Ctrl-C 130；参数解析错误由 argparse 以退出码 2 结束。"""
    from .errors import report

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(with_data=bool(argv) and argv[0] == "data").parse_args(argv)
        return args.func(args)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  包括 KeyboardInterrupt：同样一行说明，不打印调用栈
        return report(e)


if __name__ == "__main__":
    raise SystemExit(main())

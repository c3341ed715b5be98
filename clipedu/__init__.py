"""clipedu：《多模态大模型：技术原理与实战》配套的 CLIP 教学实现。

公开名字按需惰性导入（PEP 562），``import clipedu`` 很快，也不会因为一个子模块
出错而拖垮其余部分。
"""
import os as _os
import sys as _sys
from importlib import import_module

# OpenMP（torch 的 CPU 线程池，libgomp）只在 torch 载入的那一刻读取等待方式。它默认让等活的线程
# 自旋约 3 ms：机器被别的进程占用时，自旋的线程和那个进程抢核，每步慢 2–3 倍；而完全不自旋
# （OMP_WAIT_POLICY=PASSIVE）在空闲机器上又让小模型的一步慢 1.3–1.6 倍，因为每个小算子之后线程都要
# 睡下再被叫醒。所以在 torch 之前把自旋限制在 GOMP_SPINCOUNT=1000 次（约 10 微秒）：小算子之间的
# 空隙够用，等不到就让出 CPU。测量见 benchmarks/results/threads_under_load.md。用户自己设过
# OMP_WAIT_POLICY 或 GOMP_SPINCOUNT 时不动；torch 已先载入时这里无能为力，setup_notebook 会提示。
SPINCOUNT = "1000"


def _short_wait(env) -> bool:
    """按 libgomp 的规则判断：等活的线程是否很快让出 CPU（GOMP_SPINCOUNT 优先于 OMP_WAIT_POLICY）。"""
    spin = env.get("GOMP_SPINCOUNT", "").strip()
    if spin:
        return spin.isdigit() and int(spin) <= 10_000
    return env.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


if "torch" not in _sys.modules and not (_os.environ.get("OMP_WAIT_POLICY") or _os.environ.get("GOMP_SPINCOUNT")):
    _os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
OMP_SHORT_WAIT = _short_wait(_os.environ)

__version__ = "0.1.0"

# 公开名字 -> 所在子模块
_EXPORTS = {
    # 配置
    "VisionConfig": "config", "TextConfig": "config", "CLIPConfig": "config",
    "TrainConfig": "config", "PRESETS": "config", "get_preset": "config",
    # 分词
    "ChineseTokenizer": "tokenizer", "BertChineseTokenizer": "bert_tokenizer",
    # 模型
    "CLIP": "model", "VisionTransformer": "model", "TextTransformer": "model",
    "create_model": "model", "ModifiedResNet": "resnet",
    # 损失
    "clip_loss": "loss", "ClipLoss": "loss",
    # 评估
    "zero_shot_classifier": "evaluate", "zero_shot_accuracy": "evaluate",
    "retrieval_metrics": "evaluate", "encode_dataset": "evaluate",
    "encode_texts": "evaluate", "eval_mode": "evaluate",
    "evaluate_shapes": "eval_tasks", "evaluate_classification": "eval_tasks",
    "evaluate_retrieval": "eval_tasks",
    "TEMPLATES": "prompts", "SIMPLE_TEMPLATE": "prompts",
    # 训练与检查点（函数 train 在模块 trainer 里：包属性 clipedu.train 就是这个函数）
    "train": "trainer", "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    # 预训练权重
    "load_pretrained": "pretrained", "english_tokenizer": "pretrained",
    "load_cnclip": "cnclip_weights", "BertTextTower": "bert",
    # 笔记本与随机种子
    "setup_notebook": "notebook", "seed_everything": "seeding", "run_dir": "run_dirs",
}

__all__ = sorted(_EXPORTS) + ["data", "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in {"data", "exercises", "labs", "distributed"}:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'clipedu' has no attribute {name!r}")


def __dir__():
    return __all__

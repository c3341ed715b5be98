"""训练循环 ``train(cfg) -> history``：笔记本、测试与命令行共用的唯一入口（见第 5 章 sec-code-train）。

一步训练 = 取本进程那一段全局批 → 分词 → 前向/反传（可累积、可分布式）→ 优化器一步 →
``clamp_logit_scale`` → 学习率日程一步 → 记日志；按需评估、保存检查点。

准备工作（设备、进程组、模型、优化器、续训、数据流）在 ``train_setup.py``；
一步里的前向与反传在 ``train_step.py``。
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import types

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .config import TrainConfig
from .distributed import all_reduce_mean, is_dist
from .optim import observe_time
from .run_log import RunLogger
from .train_setup import TrainState, batch_stream, build_state, save_step, set_train_mode
from .train_step import train_step


def train(cfg: TrainConfig, train_dataset=None) -> list[dict]:
    """按 cfg 训练 CLIP，返回每个优化器步的记录（与 log.jsonl 每行相同）。

    输出目录里写 ``log.jsonl``、``metrics.json``、``last.pt``（和按 save_every 保存的
    ``ckpt_step{N}.pt``）。``train_dataset`` 可传入自己的 ``(image, caption, label)`` 数据集，
    否则按 ``cfg.dataset`` 构建。用 torchrun 启动时自动做 DDP。
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train 需要 TrainConfig，实际为 {type(cfg).__name__}")
    owns_group = not is_dist()  # 进程组由这里创建的，结束时也由这里销毁
    state, dataset, ckpt = build_state(cfg, train_dataset)
    logger = RunLogger(cfg.out_dir, enabled=state.rank == 0, tensorboard=cfg.tensorboard,
                       resume_step=state.step if ckpt is not None else None)
    try:
        return _run(state, dataset, logger)
    finally:
        logger.close()
        if owns_group and is_dist():
            dist.destroy_process_group()


def _run(state: TrainState, dataset, logger: RunLogger) -> list[dict]:
    cfg = state.cfg
    set_train_mode(state.raw_model, cfg)
    stream = batch_stream(dataset, state)
    bar = tqdm(total=cfg.steps, initial=state.step, desc="训练", dynamic_ncols=True,
               disable=not (cfg.progress and state.rank == 0))
    history, start_step = [], state.step
    t_start, train_time, eval_time, stopped_by = time.perf_counter(), 0.0, 0.0, "steps"
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        observe_time(state.scheduler, state.step, t0 - t_start)  # 有时间预算时，日程按已用时间退火
        record = _one_step(state, next(stream), dataset)
        dt = time.perf_counter() - t0
        train_time += dt
        record["pairs_per_s"] = cfg.batch_size / dt
        record["time_s"] = time.perf_counter() - t_start
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
            t1 = time.perf_counter()
            record.update(_evaluate(state))
            eval_time += time.perf_counter() - t1
        history.append(record)
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            logger.log(record)  # 先记日志再存检查点：被杀时日志不会比检查点少
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
            save_step(state, final=False)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                        scale=f"{record['logit_scale']:.1f}", pairs_s=f"{record['pairs_per_s']:.0f}")
        if _out_of_time(state, t_start):
            stopped_by = "time_budget"
            break
    bar.close()
    t1 = time.perf_counter()
    final_eval = _evaluate(state)
    eval_time += time.perf_counter() - t1
    save_step(state, final=True)
    pairs = (state.step - start_step) * cfg.batch_size
    logger.write_metrics({
        "status": "finished", "stopped_by": stopped_by, "steps": state.step,
        "samples_seen": state.samples_seen, "final_loss": history[-1]["loss"] if history else None,
        "final_logit_scale": state.raw_model.logit_scale.exp().item(),
        "wall_time_s": time.perf_counter() - t_start, "train_time_s": train_time, "eval_time_s": eval_time,
        "pairs_per_s": pairs / train_time if train_time > 0 else None,
        "world_size": state.world_size, "device": str(state.device), "precision": cfg.precision,
        "batch_size": cfg.batch_size, "accum_steps": cfg.accum_steps,
        "bad_samples": state.bad.to_dict(), **final_eval, "eval": final_eval,
        "model_config": state.model_config.to_dict(), "train_config": _jsonable(cfg),
    })
    return history


def _one_step(state: TrainState, batch, dataset) -> dict:
    """一个优化器步：前向/反传（含累积）→ 检查损失 → step → 截断温度 → 日程。"""
    cfg = state.cfg
    images, captions = batch[0], list(batch[1])
    state.bad.update(batch)
    state.bad.check()  # 坏样本比例超限就停，不在垃圾数据上训练
    images = images.to(state.device, non_blocking=True)
    tokens = state.tokenizer(captions, context_length=state.model_config.text.context_length)
    if not cfg.compile:  # 编译时保持静态形状；否则截掉全是 [PAD] 的尾部列，结果不变、文本塔快 2–3 倍
        tokens = state.tokenizer.trim_padding(tokens)
    tokens = tokens.to(state.device)
    lr = cfg.lr * state.scheduler.lr_lambdas[0](state.scheduler.last_epoch)  # 本步用的（基础）学习率

    state.optimizer.zero_grad(set_to_none=True)
    loss = train_step(state.model, state.loss_fn, images, tokens, state.precision, cfg.accum_steps)
    loss_value = all_reduce_mean(loss.float()).item()  # local_loss 时各进程不同，取平均记日志
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"第 {state.step + 1} 步的损失为 {loss_value}，训练已停止，参数未被这一步更新；"
            f"{cfg.out_dir} 里最近一次正常保存的检查点保持不变。可降低 --lr、改用 --precision fp32 "
            f"或 amp_bf16、设置 grad_clip 后用 --resume latest 继续 / loss is not finite"
        )
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    state.precision.step(state.optimizer, params, cfg.grad_clip)
    state.raw_model.clamp_logit_scale()
    state.scheduler.step()
    state.step += 1
    state.samples_seen += cfg.batch_size
    record = {"step": state.step, "loss": loss_value, "lr": lr,
              "logit_scale": state.raw_model.logit_scale.exp().item(),
              "samples_seen": state.samples_seen}
    if hasattr(dataset, "__len__"):
        record["epoch"] = state.samples_seen / len(dataset)
    if state.bad.seen:
        record["bad_samples"] = state.bad.bad
    return record


def _evaluate(state: TrainState) -> dict:
    """只在 0 号进程上评估（其余进程在 barrier 等它）；eval_size=0 时跳过。"""
    cfg, metrics = state.cfg, {}
    if cfg.eval_size > 0 and state.rank == 0:
        metrics = standard_eval(state.raw_model, state.tokenizer, cfg)
        set_train_mode(state.raw_model, cfg)
    if is_dist():
        dist.barrier()
    state.last_eval = metrics
    return metrics


def standard_eval(model, tokenizer, cfg: TrainConfig) -> dict:
    """按训练数据选评估：shapes → 留出组合零样本 + 检索；digits → 测试集零样本；其余不评估。"""
    if cfg.dataset == "shapes":
        from .shapes_eval import evaluate_shapes
        return evaluate_shapes(model, tokenizer, size=cfg.eval_size, seed=cfg.seed, max_objects=cfg.max_objects)
    if cfg.dataset == "digits":
        from .data import DigitsDataset
        from .prompts import TEMPLATES
        from .shapes_eval import evaluate_classification
        ds = DigitsDataset("test", image_size=model.config.vision.image_size, seed=cfg.seed)
        return evaluate_classification(model, tokenizer, ds, ds.classnames, TEMPLATES)
    return {}


def _out_of_time(state: TrainState, t_start: float) -> bool:
    """到 time_budget 了吗？由 0 号进程决定并广播，所有进程在同一步停下。"""
    if state.cfg.time_budget is None:
        return False
    flag = torch.tensor([float(time.perf_counter() - t_start >= state.cfg.time_budget)], device=state.device)
    if is_dist():
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _jsonable(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(d["betas"])
    return d


class _CallableModule(types.ModuleType):
    """``from clipedu.train import ...`` 之后，Python 会把包属性 ``clipedu.train`` 设成本模块，
    盖过同名函数；让模块本身可调用，``clipedu.train(cfg)`` 就不论导入顺序都是训练。"""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["train", "standard_eval"]

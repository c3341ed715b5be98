"""训练 ``train(cfg) -> history``：笔记本、测试、命令行共用（第 5 章 sec-code-train）。

像 nanoGPT 的 ``train.py`` 一样，从上往下读完就是一次训练：

1. ``train``：建好训练状态（设备与进程组、模型、优化器、续训），循环，最后评估并保存；
2. ``train_one_step``：一个优化器步，取批 → 分词 → ``forward_backward`` →
   ``optimizer.step()`` → 截断 1/τ → 学习率日程；
3. ``forward_backward``：前向、损失与 ``loss.backward()``，含对比学习式梯度累积；
4. 准备工作：``build_state``、``build_model``、``wrap_model``。

其余概念各有一个文件：检查点 ``checkpoint.py``、进程组 ``distributed.py``、批的顺序
``sampler.py``、精度 ``precision.py``、评估 ``eval_tasks.py``、日志 ``run_log.py``。
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .bert_tokenizer import BertChineseTokenizer, tokenizer_from_state_dict
from .checkpoint import (load_resume_checkpoint, restore_training_state,
                         save_training_checkpoint)
from .config import CLIPConfig, TrainConfig, config_from_file
from .ema import ModelEMA
from .distributed import (all_reduce_mean, barrier, broadcast_flags, init_distributed,
                          is_dist)
from .loss import ClipLoss
from .optim import build_optimizer, build_scheduler, observe_time
from .outdir import OutDirLock, check_out_dir_unused, check_resume_config, clear_run_files
from .precision import Precision, build_precision, prepare_model
from .run_log import RunLogger
from .sampler import batch_stream
from .seeding import rank_seed, seed_everything
from .stop_signal import TrainingStopped, stop_requests
from .tokenizer import ChineseTokenizer


@dataclass
class TrainState:
    """训练循环的全部可变状态；检查点存的就是它（checkpoint.training_checkpoint）。"""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    model_config: CLIPConfig
    raw_model: torch.nn.Module    # 未被 DDP/compile 包装的模型：保存它的 state_dict
    model: torch.nn.Module        # 前向用的模型（可能是 compile(DDP(raw))）
    tokenizer: ChineseTokenizer | BertChineseTokenizer
    optimizer: torch.optim.Optimizer
    scheduler: Any                # LambdaLR：预热 + 余弦衰减
    precision: Precision
    loss_fn: torch.nn.Module      # ClipLoss：多进程时先收集特征
    bad: Any                      # 坏样本计数器（真实数据）
    ema: ModelEMA | None = None   # 参数的滑动平均（cfg.ema_decay > 0 时）；评估与保存用它
    step: int = 0                 # 已完成的优化器步数
    samples_seen: int = 0         # 已消耗的全局样本数（数据位置）


# ---------------------------------------------------------------- 训练循环
def train(cfg: TrainConfig, train_dataset=None) -> list[dict]:
    """按 cfg 训练 CLIP，返回每个优化器步的记录（与 log.jsonl 每行相同）。

    输出目录里写 ``log.jsonl``、``metrics.json``、``last.pt``（和按 save_every 保存的
    ``ckpt_step{N}.pt``）。目录里已有一次训练时拒绝，除非 ``cfg.resume``（接着训练）或
    ``cfg.overwrite``（删掉旧训练的文件）。``train_dataset`` 可传入自己的
    ``(image, caption, label)`` 数据集，否则按 ``cfg.dataset`` 构建。用 torchrun 启动时自动做 DDP。
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train 需要 TrainConfig，实际为 {type(cfg).__name__}")
    cfg.validate()  # 构造之后被改坏的字段在这里拦住
    owns_group = not is_dist()  # 进程组由这里创建的，结束时也由这里销毁
    # 一个输出目录同一时间只属于一次训练（0 号进程持锁）；先持锁再检查，别的进程不能在检查之后抢进来
    with OutDirLock(cfg.out_dir) as lock:
        if lock.enabled:
            check_out_dir_unused(cfg.out_dir, cfg.resume, cfg.overwrite)
        state, dataset, resumed = build_state(cfg, train_dataset)
        if cfg.overwrite and lock.enabled:
            clear_run_files(cfg.out_dir)  # 新训练的配置与数据都没问题了，才删旧训练
        logger = RunLogger(cfg.out_dir, enabled=state.rank == 0,
                           tensorboard=cfg.tensorboard,
                           resume_step=state.step if resumed else None)
        try:
            with stop_requests() as signalled:  # SIGTERM、Ctrl-C：下一个步边界保存后停下
                return _loop(state, dataset, logger, signalled)
        finally:
            logger.close()
            if owns_group and is_dist():
                dist.destroy_process_group()


def _loop(state: TrainState, dataset, logger: RunLogger,
          signalled: Callable[[], int | None] = lambda: None) -> list[dict]:
    cfg = state.cfg
    set_train_mode(state.raw_model, cfg)
    stream = batch_stream(dataset, cfg.batch_size, state.rank, state.world_size,
                          seed=cfg.seed, start_sample=state.samples_seen,
                          num_workers=cfg.num_workers)
    bar = tqdm(total=cfg.steps, initial=state.step, desc="训练", dynamic_ncols=True,
               disable=not (cfg.progress and state.rank == 0))
    history, start_step, stopped_by = [], state.step, "steps"
    t_start, train_time, eval_time = time.perf_counter(), 0.0, 0.0
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        # 有时间预算时，学习率日程按“步数进度与时间进度取大者”推进（optim.BudgetCosine）
        observe_time(state.scheduler, state.step, t0 - t_start)
        record = train_one_step(state, next(stream), dataset)
        dt = time.perf_counter() - t0
        train_time += dt
        record["pairs_per_s"] = cfg.batch_size / dt
        record["time_s"] = time.perf_counter() - t_start
        not_last = state.step < cfg.steps  # 最后一步之后的评估与保存在循环外做
        if cfg.eval_every and state.step % cfg.eval_every == 0 and not_last:
            t1 = time.perf_counter()
            record.update(_evaluate(state))
            eval_time += time.perf_counter() - t1
        history.append(record)
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            logger.log(record)  # 先记日志再存检查点：被杀时日志不会比检查点少
        if cfg.save_every and state.step % cfg.save_every == 0 and not_last:
            save_training_checkpoint(state, final=False)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                        inv_t=f"{record['inv_temperature']:.1f}",
                        pairs_s=f"{record['pairs_per_s']:.0f}")
        out_of_time = (cfg.time_budget is not None
                       and time.perf_counter() - t_start >= cfg.time_budget)
        signum = signalled()  # SIGTERM、Ctrl-C（stop_signal.stop_requests）
        # 0 号进程说了算，所有进程在同一步停下；两个决定一次广播，每步只多一次很小的通信
        out_of_time, got_signal = broadcast_flags((out_of_time, signum is not None), state.device)
        if out_of_time:
            stopped_by = "time_budget"
            break
        if got_signal and state.step < cfg.steps:
            bar.close()
            _stop_on_signal(state, logger, signum or signal.SIGTERM, time.perf_counter() - t_start)
    bar.close()
    t1 = time.perf_counter()
    final_eval = _evaluate(state)
    eval_time += time.perf_counter() - t1
    save_training_checkpoint(state, final=True)
    pairs = (state.step - start_step) * cfg.batch_size
    logger.write_metrics({
        "status": "finished", "stopped_by": stopped_by, "steps": state.step,
        "samples_seen": state.samples_seen,
        "final_loss": history[-1]["loss"] if history else None,
        "final_inv_temperature": state.raw_model.logit_scale.exp().item(),
        "wall_time_s": time.perf_counter() - t_start, "train_time_s": train_time,
        "eval_time_s": eval_time,
        "pairs_per_s": pairs / train_time if train_time > 0 else None,
        "world_size": state.world_size, "device": str(state.device),
        "precision": cfg.precision, "batch_size": cfg.batch_size,
        "accum_steps": cfg.accum_steps, "bad_samples": state.bad.to_dict(),
        **final_eval, "eval": final_eval,
        "model_config": state.model_config.to_dict(), "train_config": _jsonable(cfg),
    })
    return history


def _stop_on_signal(state: TrainState, logger: RunLogger, signum: int, wall: float) -> None:
    """收到 SIGTERM 或 Ctrl-C：不做最终评估（调度器给的宽限时间很短），保存按步检查点，抛出 TrainingStopped。"""
    saved = save_training_checkpoint(state, final=False)
    path = str(saved) if saved is not None else None
    logger.write_metrics({"status": "stopped", "stopped_by": signal.Signals(signum).name,
                          "steps": state.step, "samples_seen": state.samples_seen,
                          "wall_time_s": wall, "checkpoint": path})
    raise TrainingStopped(signum, state.step, path)


def train_one_step(state: TrainState, batch, dataset) -> dict:
    """一个优化器步：前向/反传 → 检查损失 → optimizer.step() → 截断 1/τ → 日程。"""
    cfg = state.cfg
    images, captions = batch[0], list(batch[1])
    state.bad.update(batch)
    state.bad.check()  # 坏样本比例超限就停，不在垃圾数据上训练
    images = images.to(state.device, non_blocking=True)
    context_length = state.model_config.text.context_length
    tokens = state.tokenizer(captions, context_length=context_length)
    if not cfg.compile:
        # 截掉全是 [PAD] 的尾部列：结果不变，文本塔快 2–3 倍（编译时保持静态形状）
        tokens = state.tokenizer.trim_padding(tokens)
    tokens = tokens.to(state.device)
    sched = state.scheduler
    lr = cfg.lr * sched.lr_lambdas[0](sched.last_epoch)  # 本步用的（基础）学习率

    state.optimizer.zero_grad(set_to_none=True)
    loss = forward_backward(state.model, state.loss_fn, images, tokens, state.precision,
                            cfg.accum_steps)
    loss_value = all_reduce_mean(loss.float()).item()  # local_loss 时各进程不同，取平均
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"第 {state.step + 1} 步的损失为 {loss_value}，训练已停止，参数未被这一步"
            f"更新；{cfg.out_dir} 里最近一次正常保存的检查点保持不变。可降低 --lr、"
            f"改用 --precision fp32 或 amp_bf16、设置 grad_clip 后用 --resume latest "
            f"继续 / loss is not finite"
        )
    scaler = state.precision.scaler  # 只有 amp_fp16 有：梯度是放大过的
    if cfg.grad_clip:
        if scaler is not None:
            scaler.unscale_(state.optimizer)  # 先缩回真实梯度，阈值才有意义
        params = [p for g in state.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    if scaler is None:
        state.optimizer.step()
    else:
        scaler.step(state.optimizer)  # 梯度里有 inf/NaN 时跳过这一步
        scaler.update()
    state.raw_model.clamp_logit_scale()  # ln(1/τ) ≤ ln 100
    if state.ema is not None:
        state.ema.update(state.raw_model)  # θ̄ ← ρ·θ̄ + (1 − ρ)·θ
    state.scheduler.step()

    state.step += 1
    state.samples_seen += cfg.batch_size
    record = {"step": state.step, "loss": loss_value, "lr": lr,
              "inv_temperature": state.raw_model.logit_scale.exp().item(),
              "samples_seen": state.samples_seen}
    if hasattr(dataset, "__len__"):
        record["epoch"] = state.samples_seen / len(dataset)
    if state.bad.seen:
        record["bad_samples"] = state.bad.bad
    return record


def forward_backward(model: torch.nn.Module, loss_fn: Callable, images: torch.Tensor,
                     tokens: torch.Tensor, precision: Precision,
                     accum_steps: int = 1) -> torch.Tensor:
    """对本进程的一个批做前向与反传，返回损失（detach）；不调用 optimizer.step。"""
    if accum_steps == 1:
        with precision.autocast():
            image_features, text_features, inv_temperature = model(images, tokens)
            loss = loss_fn(image_features, text_features, inv_temperature)
        precision.scale(loss).backward()
        return loss.detach()
    return contrastive_accumulation(model, loss_fn, images, tokens, precision,
                                    accum_steps)


def contrastive_accumulation(model, loss_fn, images, tokens, precision: Precision,
                             accum_steps: int) -> torch.Tensor:
    """对比学习式梯度累积（open_clip 的 ``accum_freq``，见第 5 章 sec-code-accum）。

    负样本来自同一批里的其他样本，所以朴素累积（每个微批各算一次损失）会把负样本数
    从 B−1 减到 B/K−1。这里先不记梯度地算出全部 K 个微批的特征并缓存；再对每个
    微批 j 带梯度地重算它自己的特征，与其余微批的缓存特征拼成整批，算整批损失并反传。
    代价是每个样本前向两次；好处是显存只需一个微批的激活。

    何时与整批一步完全相同：每个样本的特征只取决于它自己时（ViT、文本塔），
    K 次反传之和就是整批损失的梯度，差别只在浮点舍入。图像塔含 BatchNorm 时
    （``rn50``）不成立：训练模式下 BatchNorm 用当前微批的均值方差，特征依赖同一
    微批里的其他样本，所以损失与梯度都与整批不同（tests/test_accumulation.py 里
    每微批 4 张图时，图像塔梯度的相对差约 1.3）；而且缓存那一遍也会更新
    running_mean/var，每步共更新 2K 次。
    """
    B = images.shape[0]
    if B % accum_steps != 0:
        raise ValueError(f"本进程批大小 {B} 不能被 accum_steps={accum_steps} 整除")
    image_chunks, token_chunks = images.chunk(accum_steps), tokens.chunk(accum_steps)

    # 第 1 步：不记梯度，算出全部微批的特征（只存特征，不存激活）
    with torch.no_grad(), precision.autocast():
        cached = [model(im, tk) for im, tk in zip(image_chunks, token_chunks)]
    cached_img, cached_txt = [c[0] for c in cached], [c[1] for c in cached]

    # 第 2 步：逐个微批重算，拼上其余微批的缓存特征，在整批上算损失
    no_sync = getattr(model, "no_sync", None)
    for j in range(accum_steps):
        # DDP：只在最后一个微批同步梯度，前面的只在本地累加
        last = j == accum_steps - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:  # 反传也要在 no_sync 里
            with precision.autocast():
                img_j, txt_j, inv_temperature = model(image_chunks[j], token_chunks[j])
                # 第 j 块换成带梯度的新特征，其余是缓存：各 (B, D)
                all_img = torch.cat(cached_img[:j] + [img_j] + cached_img[j + 1:])
                all_txt = torch.cat(cached_txt[:j] + [txt_j] + cached_txt[j + 1:])
                # 1/τ 每个微批都会重算；只让它在最后一个微批收到梯度，否则它的梯度
                # 被累加 K 次（open_clip accum_freq 的这个细节与整批不等价）
                if not last:
                    inv_temperature = inv_temperature.detach()
                loss = loss_fn(all_img, all_txt, inv_temperature)
            precision.scale(loss).backward()
    return loss.detach()


def _evaluate(state: TrainState) -> dict:
    """只在 0 号进程上评估（其余进程在 barrier 等它）；eval_size=0 时跳过。"""
    from .eval_tasks import evaluate_during_training

    metrics = {}
    if state.cfg.eval_size > 0 and state.rank == 0:
        model = state.ema.module if state.ema is not None else state.raw_model
        metrics = evaluate_during_training(model, state.tokenizer, state.cfg)
        set_train_mode(state.raw_model, state.cfg)
    barrier()
    return metrics


# ---------------------------------------------------------------- 准备
def check_batch_layout(cfg: TrainConfig, world_size: int) -> None:
    """批大小、进程数与累积步数是否相容；训练开始前就查，免得跑到一半才出错。"""
    if cfg.steps < 1:
        raise ValueError(f"steps 应为正整数，实际为 {cfg.steps}")
    if cfg.accum_steps < 1:
        raise ValueError(f"accum_steps 应 ≥ 1，实际为 {cfg.accum_steps}")
    if cfg.batch_size % (world_size * cfg.accum_steps) != 0:
        k = world_size * cfg.accum_steps
        raise ValueError(
            f"全局批大小 {cfg.batch_size} 不能被 进程数 {world_size} × 累积步数 "
            f"{cfg.accum_steps} = {k} 整除；每个进程每个微批需要相同的样本数。"
            f"请把 --batch-size 改成 {k} 的倍数 / batch not divisible"
        )


def check_batch_fits(cfg: TrainConfig, dataset) -> None:
    """批大于训练集时，同一批里必有重复的图文对：它们互为“负样本”，损失是错的。"""
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        return  # 流式数据不知道大小
    if cfg.batch_size > len(dataset):
        raise ValueError(
            f"--batch-size {cfg.batch_size} 大于训练集的样本数 {len(dataset)}：同一批里会有重复的"
            f"图文对，互相当作负样本。请把 --batch-size 减到 {len(dataset)} 以下，或用更多数据"
            f" / batch larger than dataset")


def build_model(cfg: TrainConfig, resume_ckpt: dict | None):
    """建模型与分词器：续训用检查点里的配置，--init-from 载入权重，否则随机初始化。"""
    from .model import CLIP
    from .pretrained import init_model_from

    seed_everything(cfg.seed)  # 所有进程用同一个种子初始化，参数一开始就一致
    if resume_ckpt is not None:  # 权重稍后由 restore_training_state 载入
        model = CLIP(config_from_file(resume_ckpt["config"], cfg.resume))
        tokenizer = tokenizer_from_state_dict(resume_ckpt["tokenizer"])
    elif cfg.init_from:
        model, tokenizer = init_model_from(cfg.init_from)
    else:
        model = CLIP(cfg.model_config())
        # 文本塔是 BERT（cn-clip-* 预设）时配 Chinese-CLIP 的 WordPiece 分词器
        tok_cls = (BertChineseTokenizer if model.config.text.arch == "bert"
                   else ChineseTokenizer)
        tokenizer = tok_cls(context_length=model.config.text.context_length)
    if cfg.lock_image:
        for p in model.visual.parameters():
            p.requires_grad_(False)  # LiT：图像塔冻结，只训文本塔
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model, tokenizer


def wrap_model(raw: torch.nn.Module, cfg: TrainConfig, device: torch.device,
               world_size: int) -> torch.nn.Module:
    """DDP 与 torch.compile 包装；raw 不变，保存它（键名不带 module./_orig_mod.）。"""
    model = raw
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        model = torch.compile(model)
    return model


def set_train_mode(raw: torch.nn.Module, cfg: TrainConfig) -> None:
    raw.train()
    if cfg.lock_image:
        raw.visual.eval()  # 冻结的塔也不更新 BatchNorm 统计量（ResNet）


def build_state(cfg: TrainConfig, train_dataset=None) -> tuple[TrainState, Any, bool]:
    """建好训练所需的一切；需要续训时恢复检查点。返回 (state, 数据集, 是否续训)。"""
    from .data.factory import build_train_dataset
    from .data.robust import BadSampleCounter

    device, rank, world_size = init_distributed(cfg.device)
    check_batch_layout(cfg, world_size)
    ckpt = load_resume_checkpoint(cfg.resume, cfg.out_dir)
    if ckpt is not None:  # 另一个预设或形状的检查点被拒绝，并说出差异
        check_resume_config(cfg, ckpt, cfg.resume)
    raw, tokenizer = build_model(cfg, ckpt)
    precision = build_precision(cfg.precision, device)
    raw = prepare_model(raw, precision)
    optimizer = build_optimizer(raw, cfg, device)
    if train_dataset is None:
        train_dataset = build_train_dataset(cfg, raw.config.vision.image_size)
    check_batch_fits(cfg, train_dataset)
    state = TrainState(
        cfg=cfg, device=device, rank=rank, world_size=world_size,
        model_config=raw.config, raw_model=raw,
        model=wrap_model(raw, cfg, device, world_size), tokenizer=tokenizer,
        optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg),
        precision=precision,
        loss_fn=ClipLoss(local_loss=cfg.local_loss,
                         gather_with_grad=cfg.gather_with_grad),
        bad=BadSampleCounter.for_dataset(train_dataset, cfg.max_bad_fraction),
        ema=ModelEMA(raw, cfg.ema_decay) if cfg.ema_decay > 0 else None,
    )
    seed_everything(rank_seed(cfg.seed, rank))
    if ckpt is not None:
        restore_training_state(state, ckpt)
    return state, train_dataset, ckpt is not None


def _jsonable(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(d["betas"])
    return d


__all__ = ["TrainState", "train", "train_one_step", "forward_backward",
           "contrastive_accumulation", "build_state", "build_model", "wrap_model"]

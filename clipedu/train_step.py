"""一个优化器步里的前向与反传，含对比学习式梯度累积（见第 5 章 sec-code-accum）。

对比损失的负样本来自同一批里的其他样本，所以朴素的梯度累积（每个微批各算一次损失）
会把负样本数从 B−1 减到 B/K−1，学到的东西不一样。open_clip 的 ``accum_freq`` 做法：

1. 不记梯度地算出所有 K 个微批的特征，缓存起来；
2. 对每个微批 j，带梯度地重算它自己的特征，与其余微批的**缓存特征**拼成整批，
   在整批上算损失并反传。梯度只流过第 j 块，K 次反传之和正好是整批损失的梯度。

代价是每个样本前向两次；好处是显存只需一个微批的激活。
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .precision import Precision


def _forward(model, images, tokens, precision: Precision):
    with precision.autocast():
        return model(images, tokens)


def train_step(
    model: torch.nn.Module,
    loss_fn: Callable,
    images: torch.Tensor,
    tokens: torch.Tensor,
    precision: Precision,
    accum_steps: int = 1,
) -> torch.Tensor:
    """对一个（本进程的）批做前向与反传，返回损失（detach）。不调用 optimizer.step。"""
    if accum_steps == 1:
        with precision.autocast():
            image_features, text_features, logit_scale = model(images, tokens)
            loss = loss_fn(image_features, text_features, logit_scale)
        precision.backward(loss)
        return loss.detach()
    return accumulated_step(model, loss_fn, images, tokens, precision, accum_steps)


def accumulated_step(model, loss_fn, images, tokens, precision: Precision, accum_steps: int) -> torch.Tensor:
    """对比学习式梯度累积：缓存全部微批特征，再逐个微批带梯度重算（open_clip accum_freq）。"""
    B = images.shape[0]
    if B % accum_steps != 0:
        raise ValueError(f"本进程批大小 {B} 不能被 accum_steps={accum_steps} 整除")
    image_chunks = images.chunk(accum_steps)
    token_chunks = tokens.chunk(accum_steps)

    # 第 1 步：不记梯度，算出全部微批的特征（只存特征，不存激活）
    with torch.no_grad():
        cached = [_forward(model, im, tk, precision) for im, tk in zip(image_chunks, token_chunks)]
    cached_img = [c[0] for c in cached]
    cached_txt = [c[1] for c in cached]

    # 第 2 步：逐个微批重算，拼上其余微批的缓存特征，在整批上算损失
    no_sync = getattr(model, "no_sync", None)
    loss = None
    for j in range(accum_steps):
        # DDP：只在最后一个微批同步梯度，前面的只在本地累加
        sync_ctx = no_sync() if (no_sync is not None and j < accum_steps - 1) else contextlib.nullcontext()
        with sync_ctx:
            with precision.autocast():
                img_j, txt_j, logit_scale = model(image_chunks[j], token_chunks[j])
                all_img = torch.cat(cached_img[:j] + [img_j] + cached_img[j + 1:])   # (B, D)
                all_txt = torch.cat(cached_txt[:j] + [txt_j] + cached_txt[j + 1:])   # (B, D)
                # logit_scale 每个微批都会重算；只让它在最后一个微批收到梯度，
                # 否则它的梯度被累加 K 次（open_clip accum_freq 的这个细节与整批不等价）
                if j < accum_steps - 1:
                    logit_scale = logit_scale.detach()
                loss = loss_fn(all_img, all_txt, logit_scale)
            precision.backward(loss)
    return loss.detach()

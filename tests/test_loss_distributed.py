"""两个 gloo 进程上的 ClipLoss 与单进程整批结果一致：损失与每个梯度（第 5 章 sec-scale-up）。"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipedu import ClipLoss, clip_loss

WORLD, B_LOCAL, D = 2, 3, 8


def _global_batch():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(WORLD * B_LOCAL, D, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(WORLD * B_LOCAL, D, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def _worker(rank, port, local_loss, gather_with_grad, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        img, txt = _global_batch()
        sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        img_local = img[sl].clone().requires_grad_(True)
        txt_local = txt[sl].clone().requires_grad_(True)
        scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
        loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)(img_local, txt_local, scale)
        loss.backward()
        # DDP 会把各进程的参数梯度求平均；这里对特征梯度做同样的平均，才能与单进程比较
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        scale_grad = scale.grad.clone()
        dist.all_reduce(scale_grad)
        torch.save({"loss": mean_loss / WORLD, "img_grad": img_local.grad / WORLD, "txt_grad": txt_local.grad / WORLD,
                    "scale_grad": scale_grad / WORLD}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("local_loss", [False, True])
def test_two_gloo_processes_equal_one_process(tmp_path, local_loss):
    mp.spawn(_worker, args=(_free_port(), local_loss, True, str(tmp_path)), nprocs=WORLD, join=True)
    img, txt = _global_batch()
    img.requires_grad_(True)
    txt.requires_grad_(True)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    ref = clip_loss(img, txt, scale)
    ref.backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        torch.testing.assert_close(got["loss"], ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["img_grad"], img.grad[sl], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["txt_grad"], txt.grad[sl], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["scale_grad"], scale.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_gather_without_grad_scales_tower_gradients_by_one_over_world(tmp_path):
    """gather_with_grad=False、local_loss=False：别的进程的特征是常数。经 DDP 平均后，
    特征（因而两座塔）的梯度恰好是整批梯度的 1/W，1/τ 的梯度却是完整的。"""
    mp.spawn(_worker, args=(_free_port(), False, False, str(tmp_path)), nprocs=WORLD, join=True)
    img, txt = _global_batch()
    img.requires_grad_(True)
    txt.requires_grad_(True)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    clip_loss(img, txt, scale).backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        torch.testing.assert_close(got["img_grad"], img.grad[sl] / WORLD, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["txt_grad"], txt.grad[sl] / WORLD, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["scale_grad"], scale.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_gather_without_grad_and_local_loss_is_only_approximate(tmp_path):
    """local_loss=True 时，本进程特征作为别的进程负样本的那部分梯度丢了：不再成比例。"""
    mp.spawn(_worker, args=(_free_port(), True, False, str(tmp_path)), nprocs=WORLD, join=True)
    img, txt = _global_batch()
    img.requires_grad_(True)
    clip_loss(img, txt, torch.tensor(1 / 0.07, dtype=torch.float64)).backward()
    got = torch.load(tmp_path / "rank0.pt", weights_only=True)["img_grad"]
    want = img.grad[:B_LOCAL]
    ratio = (got * want).sum() / (want * want).sum()   # 最小二乘比例
    assert not torch.allclose(got, ratio * want, rtol=1e-3, atol=1e-6)

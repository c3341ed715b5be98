"""所有测试共用的夹具（小模型、小数据集）与快慢分层。

快速层：``pytest -m "not slow"``（README 的开发者说明里有这条命令）；
完整：``pytest tests --ignore=tests/browser --ignore=tests/pdf -n 2``（``.ci/run`` 的单元测试一步；浏览器与 PDF 测试要先构建书）。
子进程、torchrun、mp.spawn 的测试和超过约 5 秒的测试都标 ``@pytest.mark.slow``。
"""
import pytest
import torch

from tiny import tiny_dataset, tiny_model_config


@pytest.fixture(scope="session")
def data():
    """512 个 16 px 的几何图形样本（确定性），多个测试文件共用一份。"""
    return tiny_dataset(512)


@pytest.fixture
def tiny_model():
    """按固定种子初始化的小 ViT CLIP。"""
    from clipedu.model import CLIP

    torch.manual_seed(0)
    return CLIP(tiny_model_config())

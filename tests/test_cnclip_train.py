"""用本书的训练引擎微调 Chinese-CLIP：--init-from、保留 BERT 分词器、续训、评估（见第 6 章 sec-cnclip）。"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cn_clip.clip as cn
from clipedu.bert import is_bert_clip
from clipedu.bert_tokenizer import BertChineseTokenizer
from clipedu.checkpoint import load_model
from clipedu.cli import main
from clipedu.config import TrainConfig
from clipedu.optim import param_groups
from clipedu.trainer import build_model
from realdata_fixtures import png_bytes, write_cnclip, write_fake_cifar
from test_cnclip_model import VIT, cn_model, save_layout

COLORS = {"红色": (230, 30, 30), "绿色": (30, 200, 30), "蓝色": (30, 30, 230), "黄色": (240, 230, 20),
          "黑色": (10, 10, 10), "白色": (250, 250, 250), "紫色": (140, 30, 200), "橙色": (250, 140, 10)}


@pytest.fixture(scope="module")
def cn_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_layout(cn_model(VIT, 1), "training", tmp_path_factory.mktemp("w") / "clip_cn_tiny.pt")


def _write_data(root: Path) -> Path:
    images = {1000 + i: png_bytes(rgb, size=(20, 14)) for i, rgb in enumerate(COLORS.values())}
    texts = [{"text_id": i, "text": f"一张{name}的图片", "image_ids": [1000 + i]} for i, name in enumerate(COLORS)]
    for split in ("train", "valid"):
        write_cnclip(root, split, images, texts)
    return root


def test_init_from_keeps_checkpoint_tokenizer_and_weights(cn_ckpt, tmp_path):
    cfg = TrainConfig(init_from=str(cn_ckpt), lock_image=True, out_dir=str(tmp_path))
    model, tokenizer = build_model(cfg, None)
    config = model.config
    assert is_bert_clip(model) and isinstance(tokenizer, BertChineseTokenizer)
    assert tokenizer.context_length == config.text.context_length == 52
    ref = torch.load(cn_ckpt, weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["bert.encoder.layer.0.attention.self.query.weight"],
                       ref["module.bert.encoder.layer.0.attention.self.query.weight"])
    assert not any(p.requires_grad for p in model.visual.parameters())       # LiT：图像塔冻结
    assert all(p.requires_grad for p in model.bert.parameters())


def test_image_lr_mult_gives_image_tower_its_own_learning_rate(cn_ckpt, tmp_path):
    model, _ = build_model(TrainConfig(init_from=str(cn_ckpt), out_dir=str(tmp_path)), None)
    groups = param_groups(model, lr=1e-4, weight_decay=0.1, head_lr_mult=10.0, image_lr_mult=0.1)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    assert lr_of["visual.conv1.weight"] == pytest.approx(1e-5)
    assert lr_of["bert.encoder.layer.0.intermediate.dense.weight"] == pytest.approx(1e-4)
    assert lr_of["visual.proj"] == lr_of["text_projection"] == pytest.approx(1e-3)
    # 图像塔多出“衰减/不衰减”两组；默认倍数 1 时分组与以前相同，图像塔不单独成组
    assert len(groups) == 6 and len(param_groups(model, 1e-4, 0.1)) == 4


@pytest.mark.slow
def test_cli_finetune_resume_and_eval_chinese_clip(cn_ckpt, tmp_path, capsys):
    data = _write_data(tmp_path / "data")
    common = ["--init-from", str(cn_ckpt), "--dataset", "cn-clip", "--data-path", str(data), "--steps", "3",
              "--batch-size", "4", "--accum-steps", "2", "--lr", "1e-3", "--warmup-steps", "1",
              "--image-lr-mult", "0.1", "--head-lr-mult", "2", "--eval-size", "0", "--device", "cpu", "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    # 命令行入口 main() 在本进程里跑（与 python -m clipedu 同一个函数），省去两次启动 Python 的时间
    assert main(["train", *common, "--out", str(a), "--save-every", "1", "--keep-last", "5"]) == 0
    # 续训：从第 2 步的检查点接着跑完，结果与一口气跑完逐位相同（数据增强与 BERT dropout 的随机数都恢复了）
    assert main(["train", *common, "--out", str(b), "--resume", str(a / "ckpt_step2.pt")]) == 0
    full, resumed = (torch.load(p / "last.pt", weights_only=True) for p in (a, b))
    assert full["train_state"]["step"] == resumed["train_state"]["step"] == 3
    for key, value in full["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    # 检查点里的分词器就是 Chinese-CLIP 的 BERT 分词器（词表以字符串保存，不用 pickle）
    assert full["tokenizer"]["type"] == "BertChineseTokenizer"
    assert full["tokenizer"]["vocab"] == list(cn._tokenizer.vocab)
    model, tokenizer = load_model(a / "last.pt")
    assert is_bert_clip(model) and torch.equal(tokenizer(["一张红色的图片"]), cn.tokenize(["一张红色的图片"]))
    init = torch.load(cn_ckpt, weights_only=True)["state_dict"]
    assert not torch.equal(full["model"]["bert.embeddings.LayerNorm.weight"], init["module.bert.embeddings.LayerNorm.weight"])

    # 评估：微调后的 clipedu 检查点（检索），以及原始 Chinese-CLIP 文件（CIFAR 零样本，中文类名与模板）
    assert main(["eval", "--checkpoint", str(a / "last.pt"), "--dataset", "cn-clip", "--root", str(data),
                 "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n_images"] == metrics["n_texts"] == len(COLORS) and 0.0 <= metrics["i2t_R@1"] <= 1.0
    cifar = write_fake_cifar(tmp_path / "cifar")
    assert main(["eval", "--checkpoint", str(cn_ckpt), "--dataset", "cifar10", "--root", str(cifar),
                 "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["zero_shot_top1"] <= 1.0


@pytest.mark.slow
def test_torchrun_two_process_finetune_resumes_exactly(cn_ckpt, tmp_path):
    """真的用 torchrun（gloo，2 个进程）跑命令行的 Chinese-CLIP 微调：BERT 文本塔、cn-clip 数据、保存与续训。

    BERT 有 dropout、两个进程的随机数不同，所以不与单进程比；比的是“从第 2 步续训”与“一口气跑完”逐位相同，
    这要求两个进程的随机数状态都存进了检查点、又都恢复了。"""
    data = _write_data(tmp_path / "data")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    common = ["--init-from", str(cn_ckpt), "--dataset", "cn-clip", "--data-path", str(data), "--steps", "3",
              "--batch-size", "4", "--lr", "1e-3", "--warmup-steps", "1", "--eval-size", "0",
              "--device", "cpu", "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"

    def torchrun(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "clipedu", "train", *common, *args]
        # torchrun 的 torchelastic_* 临时目录放进 tmp_path，随测试一起清理
        done = subprocess.run(cmd, env={**env, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]

    torchrun("--out", str(a), "--save-every", "1", "--keep-last", "5")
    torchrun("--out", str(b), "--resume", str(a / "ckpt_step2.pt"))
    full, resumed = (torch.load(p / "last.pt", weights_only=True) for p in (a, b))
    assert full["train_state"]["world_size"] == resumed["train_state"]["world_size"] == 2
    assert len(full["train_state"]["rng"]) == 2 and full["tokenizer"]["type"] == "BertChineseTokenizer"
    assert json.loads((a / "metrics.json").read_text())["world_size"] == 2
    for key, value in full["model"].items():          # 没有 module. 前缀：存的是未包装的模型
        assert torch.equal(resumed["model"][key], value), key
    init = torch.load(cn_ckpt, weights_only=True)["state_dict"]
    assert not torch.equal(full["model"]["bert.encoder.layer.0.output.dense.weight"],
                           init["module.bert.encoder.layer.0.output.dense.weight"])

"""评估驱动：在具体数据集上调用 ``evaluate.py`` 的指标函数（第 3 章 sec-zero-shot）。

全书所有评估都从这里走：

* ``evaluate_shapes``：几何图形世界。``zero_shot_top1_heldout`` 是留出组合的图像在全部
  36 个类别里的零样本准确率（这些组合训练时一次也没出现，衡量“把见过的概念组合
  起来”的能力）；``zero_shot_top1_test`` 是见过的组合、没见过的图像；
  ``i2t_R@k`` / ``t2i_R@k`` 是 shapes 测试集上的图文检索；
* ``evaluate_classification``：任意 ``(image, caption, label)`` 数据集上的零样本分类
  （手写数字、CIFAR、ImageFolder）；
* ``evaluate_retrieval``：图文检索集（cn-clip 格式）；
* ``evaluate_during_training``：训练中按训练数据选上面之一；
* ``evaluate_checkpoint``：``python -m clipedu eval`` 的实现。
"""
from __future__ import annotations

from typing import Optional, Sequence

from .evaluate import (encode_dataset, encode_texts, eval_mode, retrieval_metrics,
                       zero_shot_accuracy, zero_shot_classifier)
from .prompts import TEMPLATES


def _prefixed(metrics: dict, suffix: str) -> dict:
    return {f"zero_shot_{k}{suffix}": v for k, v in metrics.items() if k != "n"}


def evaluate_classification(model, tokenizer, dataset, classnames: Sequence[str],
                            templates: Sequence[str], device=None,
                            batch_size: int = 256) -> dict:
    """零样本分类：类名 × 模板 → 分类器，编码整个数据集，算 top-k 与各类召回率。"""
    with eval_mode(model):
        classifier = zero_shot_classifier(model, tokenizer, list(classnames),
                                          list(templates), device=device)
        feats, labels = encode_dataset(model, dataset, batch_size, device)
    metrics = zero_shot_accuracy(feats, labels, classifier.cpu())
    return {f"zero_shot_{k}": v for k, v in metrics.items()}  # 含样本数 zero_shot_n


def evaluate_shapes(model, tokenizer, image_size: Optional[int] = None,
                    size: int = 1000, seed: int = 0,
                    templates: Optional[Sequence[str]] = None, device=None,
                    batch_size: int = 256, max_objects: int = 1) -> dict:
    """在 shapes 的 heldout/test 划分上评估，返回扁平的指标字典（[0,1] 小数或名次）。"""
    from .data import ShapesDataset

    image_size = image_size or model.config.vision.image_size
    templates = list(templates or TEMPLATES)
    splits = {name: ShapesDataset(name, size=size, image_size=image_size, seed=seed,
                                  max_objects=max_objects)
              for name in ("heldout", "test")}
    out = {}
    with eval_mode(model):
        classnames = splits["heldout"].classnames  # 全部 36 个（颜色, 形状）类别
        classifier = zero_shot_classifier(model, tokenizer, classnames, templates,
                                          device=device).cpu()
        for name, ds in splits.items():
            feats, labels = encode_dataset(model, ds, batch_size, device)
            metrics = zero_shot_accuracy(feats, labels, classifier)
            out.update(_prefixed(metrics, f"_{name}"))
        test = splits["test"]
        captions = [test.caption(i) for i in range(len(test))]
        text_feats = encode_texts(model, tokenizer, captions, batch_size, device)
        out.update(retrieval_metrics(feats, text_feats))  # feats：test 划分的图像特征
    out["eval_size"] = size
    return out


def evaluate_retrieval(model, tokenizer, rs, batch_size: int = 256,
                       device=None) -> dict:
    """RetrievalSet 上的图文检索指标（i2t/t2i 的 R@1/5/10 与名次），附坏样本统计。"""
    image_emb, _ = encode_dataset(model, rs.images, batch_size=batch_size,
                                  device=device)
    text_emb = encode_texts(model, tokenizer, rs.captions, batch_size=batch_size,
                            device=device)
    metrics = retrieval_metrics(image_emb, text_emb, rs.text_to_image)
    return {**metrics, "n_images": len(rs.images), "n_texts": len(rs.captions),
            "bad_samples": rs.bad_samples.bad}


def evaluate_during_training(model, tokenizer, cfg) -> dict:
    """训练中与训练结束时的评估：shapes → 留出组合零样本 + 检索；digits → 测试集
    零样本；其余数据不评估（返回空字典）。"""
    if cfg.dataset == "shapes":
        return evaluate_shapes(model, tokenizer, size=cfg.eval_size, seed=cfg.seed,
                               max_objects=cfg.max_objects)
    if cfg.dataset == "digits":
        from .data import DigitsDataset
        ds = DigitsDataset("test", image_size=model.config.vision.image_size,
                           seed=cfg.seed)
        return evaluate_classification(model, tokenizer, ds, ds.classnames, TEMPLATES)
    return {}


def evaluate_checkpoint(path: str, dataset: str = "shapes", root: Optional[str] = None,
                        eval_size: int = 1000, seed: int = 0, device: str = "auto",
                        strict: bool = False, max_bad_fraction: float = 0.01) -> dict:
    """``python -m clipedu eval``：载入检查点，在 shapes 或 build_eval_dataset 的
    数据集上评估；真实数据同时报告跳过的坏样本，并执行比例上限。"""
    from .distributed import resolve_device

    model, tokenizer = _load_for_eval(path, resolve_device(device))
    if dataset == "shapes":
        metrics = evaluate_shapes(model, tokenizer, size=eval_size, seed=seed)
    else:
        metrics = evaluate_eval_set(model, tokenizer, dataset, root, strict,
                                    max_bad_fraction)
    return {"checkpoint": str(path), "dataset": dataset, **metrics}


def _load_for_eval(path: str, device):
    """clipedu 检查点用 load_model；Chinese-CLIP 的原始权重用 load_pretrained，
    配它自己的 BERT 分词器。"""
    from .checkpoint import is_clipedu_checkpoint, load_checkpoint, load_model
    from .pretrained import is_torchscript

    p = str(path)
    if not (p.endswith(".safetensors") or is_torchscript(p)):
        if is_clipedu_checkpoint(load_checkpoint(p)):
            return load_model(p, device=device)
    from .bert_tokenizer import BertChineseTokenizer
    from .pretrained import load_pretrained
    model, _ = load_pretrained(p, device=device)
    if model.config.text.arch != "bert":
        raise ValueError(f"{p} 是 OpenAI/open_clip 的英文权重，eval 的中文类名与模板"
                         f"不适用；请先用 train --init-from 微调成 clipedu 检查点"
                         f" / English weights")
    return model, BertChineseTokenizer(context_length=model.config.text.context_length)


def evaluate_eval_set(model, tokenizer, name: str, root: str, strict: bool = False,
                      max_bad_fraction: float = 0.01) -> dict:
    """真实评估集：建数据集、评估，并报告跳过的坏样本（``bad_samples``、
    ``bad_samples_by_reason``）。坏图被另一张好图替换，指标仍在完整的 N 个样本上算；
    坏样本比例超过 ``max_bad_fraction`` 时报错。"""
    from .data.eval_sets import build_eval_dataset

    ds, classnames, templates = build_eval_dataset(
        name, root, model.config.vision.image_size, strict=strict,
        max_bad_fraction=max_bad_fraction)
    if classnames is None:  # 图文检索集（如 cn-clip）没有类别
        metrics = evaluate_retrieval(model, tokenizer, ds)
        counter = ds.bad_samples
    else:
        metrics = evaluate_classification(model, tokenizer, ds, classnames, templates)
        counter = ds.bad_samples()
    counter.check(force=True)
    return {**metrics, "bad_samples": counter.bad,
            "bad_samples_by_reason": dict(sorted(counter.counts.items()))}


__all__ = ["evaluate_classification", "evaluate_shapes", "evaluate_retrieval",
           "evaluate_during_training", "evaluate_checkpoint", "evaluate_eval_set"]

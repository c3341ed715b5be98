"""内置数据：几何图形世界、手写数字、图形问答与变换。"""
import collections
import re

import numpy as np
import pytest
import torch
from PIL import Image

from clipedu.data import (CLIP_MEAN, CLIP_STD, DigitsDataset, ShapesDataset, denormalize,
                          eval_transform, normalize_uint8, train_transform)
from clipedu.data import shapes as S
from clipedu.data.render import render_batch
from clipedu.labs import vqa as V
from clipedu.labs.vqa import ShapesVQADataset
from clipedu.tokenizer import UNK_ID, ChineseTokenizer


def combo_regex(c: int, s: int) -> re.Pattern:
    """标题里提到 (颜色 c, 形状 s) 的所有写法：红色的圆形、红色圆形、红色的大圆形、圆形，颜色是红色。"""
    col, shp = S.COLORS[c], S.SHAPES[s]
    return re.compile(f"{col}的?[大小]?{shp}|{shp}，颜色是{col}")


# ---------------- 几何图形世界 ----------------

def test_classnames_and_heldout_latin_square():
    ds = ShapesDataset
    assert len(ds.classnames) == len(set(ds.classnames)) == 36
    assert ds.classnames[S.class_id(0, 0)] == "红色的圆形"
    assert [ds.class_attributes[i] for i in range(2)] == [("红色", "圆形"), ("红色", "正方形")]
    held = [ds.class_attributes[i] for i in ds.heldout_classes]
    # 每种颜色、每种形状恰好留出一次，因此在训练中都各有 5 种搭配
    assert sorted(c for c, _ in held) == sorted(ds.COLORS)
    assert sorted(s for _, s in held) == sorted(ds.SHAPES)
    assert set(ds.seen_classes) | set(ds.heldout_classes) == set(range(36))
    assert not set(ds.seen_classes) & set(ds.heldout_classes)
    # 第 2 章要生成的两个“见过的”组合
    assert {S.class_id(0, 0), S.class_id(3, 2)} <= set(ds.seen_classes)


def test_shapes_deterministic_and_pure_function_of_index():
    a = ShapesDataset("train", size=50, seed=3, max_objects=2)
    b = ShapesDataset("train", size=3000, seed=3, max_objects=2)   # 不同 size，同一前缀
    for i in (49, 0, 17):  # 乱序访问
        xa, ca, la = a[i]
        xb, cb, lb = b[i]
        assert torch.equal(xa, xb) and ca == cb and la == lb
    c = ShapesDataset("train", size=50, seed=4, max_objects=2)
    assert not torch.equal(a.get_batch(range(50))[0], c.get_batch(range(50))[0])
    t = ShapesDataset("test", size=50, seed=3, max_objects=2)
    assert not torch.equal(a.get_batch(range(50))[0], t.get_batch(range(50))[0])
    # 跨块（第 1024 个之后）也一致
    big = ShapesDataset("train", size=1100, seed=3, max_objects=2)
    assert torch.equal(big[1050][0], ShapesDataset("train", size=1100, seed=3, max_objects=2)[1050][0])


@pytest.mark.parametrize("max_objects", [1, 3])
def test_heldout_never_in_train(max_objects):
    ds = ShapesDataset("train", size=3000, seed=1, max_objects=max_objects)
    held = [(c, s) for c in range(6) for s in range(6) if S.class_id(c, s) in ds.heldout_classes]
    patterns = [combo_regex(c, s) for c, s in held]
    for i in range(len(ds)):
        objs = ds.objects(i)
        assert all(S.class_id(c, s) not in ds.heldout_classes for c, s, _, _ in objs)
        cap = ds.caption(i)
        assert not any(p.search(cap) for p in patterns), cap
        # 标题提到图中每个物体的颜色与形状（所以上面的文本检查不是空检查）
        assert all(combo_regex(c, s).search(cap) for c, s, _, _ in objs), (cap, objs)
        assert ds.label(i) == S.class_id(objs[0][0], objs[0][1])


def test_heldout_and_test_splits():
    h = ShapesDataset("heldout", size=400, max_objects=3)
    assert {h.label(i) for i in range(len(h))} == set(h.heldout_classes)
    for i in range(len(h)):
        assert all(S.class_id(c, s) in h.heldout_classes for c, s, _, _ in h.objects(i))
        assert combo_regex(*h.objects(i)[0][:2]).search(h.caption(i))
    t = ShapesDataset("test", size=2000)
    labels = {t.label(i) for i in range(len(t))}
    assert labels == set(t.seen_classes)


def test_caption_variety_and_tokenizer_coverage():
    tok = ChineseTokenizer()
    for k in (1, 3):
        ds = ShapesDataset("train", size=2000, max_objects=k)
        caps = [ds.caption(i) for i in range(len(ds))]
        assert len(set(caps)) > 300
        ids = tok(caps, context_length=32)
        assert not (ids == UNK_ID).any(), "标题里有词表外的字"
        assert max(len(c) for c in caps) <= 30, "标题须放得下 tiny-cpu 的上下文长度 32（含 [SOS]/[EOS]）"
    ds = ShapesDataset("train", size=2000)
    red_circle = {ds.caption(i) for i in range(len(ds)) if ds.label(i) == 0}
    assert len(red_circle) >= 10  # 同一类有多种说法


def test_images_show_the_right_colour_at_the_right_place():
    ds = ShapesDataset("train", size=300, image_size=32)
    assert ds[0][0].shape == (3, 32, 32) and ds[0][0].dtype == torch.float32
    for i in range(len(ds)):
        (c, s, z, p), = ds.objects(i)
        x, y = (S.POSITION_XY[p] * 32).astype(int)
        pixel = ds.raw(i)[y, x].astype(float)
        assert np.abs(pixel - S.COLOR_RGB[c]).max() < 45, (i, pixel, S.COLORS[c])
        corner = ds.raw(i)[0 if y > 16 else 31, 0 if x > 16 else 31].astype(float)
        assert corner.max() < 80  # 对角上是深色背景
    x = denormalize(ds.get_batch(range(8))[0])
    assert x.min() >= 0 and x.max() <= 1


def test_six_shapes_have_distinct_masks():
    B = 6
    shapes = np.arange(B)[:, None]
    centers = np.full((B, 1, 2), 0.5, dtype=np.float32)
    radii = np.full((B, 1), 0.3, dtype=np.float32)
    rgb = np.full((B, 1, 3), 255.0, dtype=np.float32)
    bg = np.zeros((B, 3), dtype=np.float32)
    masks = render_batch(shapes, centers, radii, rgb, bg, 32)[..., 0] > 127
    area = masks.reshape(B, -1).sum(1)
    assert (area > 60).all()
    for i in range(B):
        for j in range(i + 1, B):
            iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert iou < 0.85, (S.SHAPES[i], S.SHAPES[j], iou)
    # 画在正中的图形左右对称（十字、圆、方、菱形、三角、星都应如此）
    assert (masks == masks[:, :, ::-1]).mean() > 0.97


def test_get_batch_matches_getitem_and_transform_hook():
    ds = ShapesDataset("test", size=20, image_size=48, max_objects=2)
    x, caps, labels = ds.get_batch([3, 5, 7])
    assert x.shape == (3, 3, 48, 48) and labels.dtype == torch.long
    for k, i in enumerate([3, 5, 7]):
        assert torch.equal(x[k], ds[i][0]) and caps[k] == ds[i][1] and labels[k] == ds[i][2]
    aug = ShapesDataset("test", size=20, image_size=48, transform=eval_transform(32))
    assert aug[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="val"), "split"), (dict(image_size=8), "image_size"), (dict(max_objects=0), "max_objects"),
    (dict(max_objects=4), "max_objects"), (dict(size=0), "size"), (dict(seed=-1), "seed"),
])
def test_shapes_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**kwargs)


def test_shapes_bad_index():
    ds = ShapesDataset(size=5)
    with pytest.raises(IndexError, match="越界"):
        ds[5]
    with pytest.raises(TypeError, match="整数"):
        ds["0"]
    assert torch.equal(ds[-1][0], ds[4][0])
    assert ds[torch.tensor(2)][1] == ds[np.int64(2)][1] == ds[2][1]  # 采样器给出的各种整数
    with pytest.raises(TypeError):
        ds[True]


# ---------------- 手写数字 ----------------

def test_digits_split_deterministic_stratified_disjoint():
    tr, te = DigitsDataset("train"), DigitsDataset("test")
    assert len(tr) + len(te) == 1797 and not set(tr.indices) & set(te.indices)
    assert np.array_equal(te.indices, DigitsDataset("test").indices)
    assert not np.array_equal(te.indices, DigitsDataset("test", seed=1).indices)
    total = np.bincount(np.concatenate([tr.labels, te.labels]), minlength=10)
    assert np.array_equal(np.bincount(te.labels, minlength=10), np.round(0.3 * total).astype(int))
    assert torch.equal(tr[5][0], DigitsDataset("train")[5][0])


def test_digits_items_and_captions():
    ds = DigitsDataset("test", image_size=24)
    x, cap, y = ds[0]
    assert x.shape == (3, 24, 24) and 0 <= y <= 9
    raw = denormalize(x)  # 灰度图复制成 3 通道：还原后三个通道相同
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)
    caps = [ds.caption(i) for i in range(len(ds))]
    assert len({re.sub("[0-9零一二三四五六七八九]", "#", c) for c in caps}) >= 8  # 模板多样
    for i, c in enumerate(caps):
        d = int(ds.labels[i])
        assert str(d) in c or "零一二三四五六七八九"[d] in c
    assert any(ch in "".join(caps) for ch in "零一二三") and any(ch in "".join(caps) for ch in "0123")
    assert ds.classnames[7] == "数字7" and ds.classnames_hanzi[7] == "数字七"
    assert not (ChineseTokenizer()(caps) == UNK_ID).any()


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        DigitsDataset("heldout")
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataset(test_fraction=1.5)


# ---------------- 变换 ----------------

@pytest.mark.parametrize("mode, size", [("RGB", (50, 40)), ("L", (40, 64)), ("RGBA", (32, 32))])
def test_transforms_output_shape_for_any_pil_image(mode, size):
    img = Image.new(mode, size)
    for tf in (train_transform(32), eval_transform(32)):
        x = tf(img)
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_eval_transform_normalises_with_clip_stats_and_denormalize_inverts():
    img = Image.new("RGB", (40, 60), (255, 128, 0))
    x = eval_transform(16)(img)
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x[:, 8, 8], expected.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(denormalize(x)[:, 8, 8], torch.tensor([1.0, 128 / 255, 0.0]), atol=1e-4, rtol=0)
    u8 = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    torch.testing.assert_close(denormalize(normalize_uint8(u8)) * 255, torch.from_numpy(u8).permute(0, 3, 1, 2).float(),
                               atol=1e-3, rtol=0)


def test_transform_bad_input():
    with pytest.raises(ValueError, match="image_size"):
        train_transform(0)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        denormalize(torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="uint8"):
        normalize_uint8(np.zeros((4, 4, 3), dtype=np.float32))


# ---------------- 图形问答 ----------------

def test_vqa_answers_agree_with_the_scene():
    ds = ShapesVQADataset("train", size=600, seed=2)
    for i in range(len(ds)):
        q, a, objs, kind = ds.question(i), ds.answer(i), ds.objects(i), ds.question_type(i)
        assert len({c for c, _ in objs}) == len(objs) == len({s for _, s in objs}) and 1 <= len(objs) <= 3
        assert a in ds.answer_sets[q]
        if kind == "yesno":
            present = any(f"{S.COLORS[c]}的{S.SHAPES[s]}" in q for c, s in objs)
            assert present == (ds.answers[a] == "是"), (q, ds.answers[a], objs)
        elif kind == "color":
            assert any(q.startswith(S.SHAPES[s]) and ds.answers[a] == S.COLORS[c] for c, s in objs)
        else:
            assert any(q.startswith(S.COLORS[c]) and ds.answers[a] == S.SHAPES[s] for c, s in objs)
    x, qs, ans = ds.get_batch(range(4))
    assert x.shape == (4, 3, 32, 32) and ans.tolist() == [ds.answer(i) for i in range(4)]


def test_vqa_exactly_balanced_per_question():
    L = len(V.PAIRS)
    ds = ShapesVQADataset("train", size=3 * L, seed=5)
    counts = collections.defaultdict(collections.Counter)
    for i in range(len(ds)):
        counts[ds.question(i)][ds.answer(i)] += 1
    assert set(counts) == set(ds.questions)
    for q, c in counts.items():
        assert sorted(c) == ds.answer_sets[q] and set(c.values()) == {3}, (q, c)
    yes = sum(c[V.YES] for c in counts.values())
    no = sum(c[V.NO] for c in counts.values())
    assert yes == no > 0


def test_vqa_text_only_baseline_is_at_chance():
    """只看问题的多数票基线：在训练集上记每个问题最常见的答案，测试集上准确率≈随机水平。"""
    train = ShapesVQADataset("train", size=2000, seed=0)
    test = ShapesVQADataset("test", size=2000, seed=0)
    votes = collections.defaultdict(collections.Counter)
    for i in range(len(train)):
        votes[train.question(i)][train.answer(i)] += 1
    majority = {q: c.most_common(1)[0][0] for q, c in votes.items()}
    acc = np.mean([majority.get(test.question(i), V.YES) == test.answer(i) for i in range(len(test))])
    assert abs(acc - ds_chance()) < 0.04, (acc, ds_chance())
    yesno = [i for i in range(len(test)) if test.question_type(i) == "yesno"]
    acc_yn = np.mean([majority[test.question(i)] == test.answer(i) for i in yesno])
    assert abs(acc_yn - 0.5) < 0.05


def ds_chance() -> float:
    # 是非题 2/3、答案 1/2；颜色/形状题 1/3、答案 1/6
    chance = 2 / 3 * 1 / 2 + 1 / 3 * 1 / 6
    assert abs(ShapesVQADataset.blind_chance - chance) < 1e-9
    return chance


def test_vqa_deterministic_and_bad_arguments():
    a, b = ShapesVQADataset("test", size=30, seed=1), ShapesVQADataset("test", size=500, seed=1)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1:] == b[i][1:] for i in (0, 29, 11))
    c = ShapesVQADataset("test", size=30, seed=2)
    assert [c.question(i) for i in range(30)] != [a.question(i) for i in range(30)]
    with pytest.raises(ValueError, match="split"):
        ShapesVQADataset("heldout")
    with pytest.raises(ValueError, match="image_size"):
        ShapesVQADataset(image_size=4)

"""真实数据：CSV/TSV、Chinese-CLIP 格式、WebDataset 分片、ImageFolder/CIFAR 与稳健解码。

每种坏输入都在 tmp_path 里现做，检查：跳过并按原因计数、strict 报错指明文件与行、
坏样本比例超限即停、DataLoader worker 里的坏样本不致崩溃且计数回到主进程。
"""
from __future__ import annotations

import argparse
import tarfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clipedu.config import TrainConfig
from clipedu.data.cnclip import CnClipDataset, load_retrieval_set
from clipedu.data.csv import CsvDataset
from clipedu.data.eval_sets import build_eval_dataset
from clipedu.data.factory import build_train_dataset
from clipedu.data.folders import CIFAR10_CLASSNAMES_ZH, CIFAR100_CLASSNAMES_ZH, ImageFolderZh
from clipedu.data.robust import (BadSample, BadSampleCounter, BadSampleError, Batch, collate, decode_image,
                                 clean_caption)
from clipedu.data.shard import add_data_parser, write_shards
from clipedu.data.wds import build_wds_dataset
from clipedu.data import eval_transform

from realdata_fixtures import (COLORS, exif_rotated_jpeg, jpeg_bytes, odd_mode_images, png_bytes,
                               write_cnclip, write_csv_folder, write_fake_cifar)

T16 = eval_transform(16)


# ---------------------------------------------------------------- 图像解码

@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+transparency", "RGBA", "CMYK", "I;16", "1"])
def test_every_image_mode_decodes_to_rgb(mode):
    img = decode_image(odd_mode_images()[mode], where=mode)
    assert img.mode == "RGB" and img.size == (8, 8)
    px = img.getpixel((0, 0))
    if mode in ("RGBA", "P+transparency", "LA"):
        assert px == (255, 255, 255), "透明像素应贴到白底上"
    if mode == "CMYK":
        assert px[0] > 200 and px[1] < 60 and px[2] < 60, f"CMYK (0,255,255,0) 应是红色，得到 {px}"
    if mode == "I;16":
        values = sorted(set(np.asarray(img.convert("L")).ravel().tolist()))
        assert values[0] == 0 and values[-1] == 255 and len(values) > 30, "16 位图应按范围缩放，而不是截断成全白"


def test_exif_rotation_is_applied():
    img = decode_image(exif_rotated_jpeg((20, 10)))
    assert img.size == (10, 20)


def test_corrupt_truncated_and_missing_images(tmp_path):
    with pytest.raises(BadSample) as e:
        decode_image(b"this is not an image")
    assert e.value.reason == "corrupt_image"
    with pytest.raises(BadSample) as e:
        decode_image(jpeg_bytes(size=(64, 64))[:200])  # 截断的 JPEG
    assert e.value.reason == "corrupt_image"
    with pytest.raises(BadSample) as e:
        decode_image(tmp_path / "nope.jpg")
    assert e.value.reason == "missing_file"


def test_captions_are_cleaned():
    assert clean_caption("  一只\n猫 \t在睡觉 ") == "一只 猫 在睡觉"
    for bad in ("", "   \t\n"):
        with pytest.raises(BadSample, match="empty_caption"):
            clean_caption(bad)
    with pytest.raises(BadSample, match="malformed_row"):
        clean_caption(None)


# ---------------------------------------------------------------- CSV/TSV

def _mixed_csv(tmp_path, max_bad_fraction=0.5, **kw):
    """6 行：3 行好的，1 行空文本、1 行缺字段（索引时跳过），1 张坏图 + 1 张缺图（读取时替换）。"""
    rows = [("0.png", "红色方块", png_bytes(COLORS["红"])), ("1.png", "   ", png_bytes()),
            ("2.jpg", "损坏的图", b"garbage"), ("3.png", "缺失的图", None),
            ("4.jpg", "绿色方块", jpeg_bytes(COLORS["绿"])), ("5.png", "蓝色方块", png_bytes(COLORS["蓝"]))]
    path = write_csv_folder(tmp_path, rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write("only_one_field\n")
    return path, CsvDataset(str(path), transform=T16, max_bad_fraction=max_bad_fraction, **kw)


def test_csv_skips_and_counts_bad_rows_and_images(tmp_path):
    path, ds = _mixed_csv(tmp_path)
    assert len(ds) == 5
    assert ds.index_counter.to_dict()["by_reason"] == {"empty_caption": 1, "malformed_row": 1}
    batch = collate([ds[i] for i in range(len(ds))])
    assert isinstance(batch, Batch) and batch.images.shape == (5, 3, 16, 16)  # 批大小不变
    assert batch.captions[0::3] == ["红色方块", "绿色方块"] and batch.captions[4] == "蓝色方块"
    # 坏图、缺图各换成一个随机的好样本（确定性：同一下标每次换成同一个）
    assert set(batch.captions[1:3]) <= {"红色方块", "绿色方块", "蓝色方块"}
    assert [s[1] for s in (ds[1], ds[2])] == batch.captions[1:3]
    assert batch.labels.tolist() == [-1] * 5
    # 每个坏样本只计一次：试替补时碰到的坏样本不计，轮到它自己时才计（见 tests/test_hardening.py）
    assert batch.bad == {"corrupt_image": 1, "missing_file": 1} and batch.seen == 7
    assert "2.jpg" in batch.examples["corrupt_image"] and "3.png" in batch.examples["missing_file"]
    counter = BadSampleCounter.for_dataset(ds, max_bad_fraction=0.5, min_seen=0)
    counter.update(batch)
    assert counter.to_dict() == {"seen": 14, "bad": 4,
                                 "by_reason": {"corrupt_image": 1, "empty_caption": 1,
                                               "malformed_row": 1, "missing_file": 1}}


def test_csv_strict_names_file_and_row(tmp_path):
    with pytest.raises(BadSampleError, match=r"data\.csv 第 3 行") as e:
        _mixed_csv(tmp_path, strict=True)
    assert "empty_caption" in str(e.value)
    rows = [("0.png", "好图", png_bytes()), ("1.jpg", "坏图", b"garbage")]
    ds = CsvDataset(str(write_csv_folder(tmp_path, rows, name="ok.csv")), transform=T16, strict=True)
    ds[0]
    with pytest.raises(BadSampleError, match=r"ok\.csv 第 3 行.*1\.jpg") as e:
        ds[1]
    assert "corrupt_image" in str(e.value)


def test_too_many_bad_rows_stops(tmp_path):
    with pytest.raises(BadSampleError, match="坏样本比例.*超过上限 1.0%"):
        _mixed_csv(tmp_path, max_bad_fraction=0.01)
    counter = BadSampleCounter(max_bad_fraction=0.1, min_seen=10)
    counter.add("corrupt_image", "a.jpg 第 2 行")
    counter.check()  # 只看到 1 个样本，还不判断
    counter.add_good(8)
    counter.add("missing_file", "b.jpg")
    with pytest.raises(BadSampleError, match=r"20\.0%.*a\.jpg 第 2 行"):
        counter.check()


def test_tsv_separator_columns_and_encodings(tmp_path):
    rows = [("0.png", "一只猫, 在睡觉", png_bytes()), ("1.png", "一条狗", png_bytes())]
    tsv = write_csv_folder(tmp_path, rows, name="pairs.tsv", header="img\tcap")
    ds = CsvDataset(str(tsv), img_key="img", caption_key="cap")
    assert [ds.load(i)[1] for i in range(2)] == ["一只猫, 在睡觉", "一条狗"]  # .tsv → 制表符，逗号留在文本里
    with pytest.raises(ValueError, match=r"缺少列 \['filepath', 'title'\]"):
        CsvDataset(str(tsv))
    gbk = write_csv_folder(tmp_path, rows[1:], name="gbk.csv", encoding="gb18030")
    with pytest.raises(BadSampleError, match="bad_encoding"):
        CsvDataset(str(gbk))  # 唯一的数据行不是 UTF-8 → 全是坏行
    assert CsvDataset(str(gbk), encoding="gb18030").load(0)[1] == "一条狗"
    semi = tmp_path / "semi.csv"
    semi.write_text("filepath;title\nimgs/0.png;分号分隔\n", encoding="utf-8")
    assert CsvDataset(str(semi), sep=";").load(0)[1] == "分号分隔"


# ---------------------------------------------------------------- Chinese-CLIP 格式

def _cnclip(tmp_path, split="train"):
    images = {1001: png_bytes(COLORS["红"]), 1002: png_bytes(COLORS["绿"]), 1003: b"not an image",
              1004: png_bytes(COLORS["蓝"])}
    texts = [
        {"text_id": 1, "text": "红色的方块", "image_ids": [1001]},
        {"text_id": 2, "text": "一块红色", "image_ids": [1001]},
        {"text_id": 3, "text": "绿色的方块", "image_ids": [1002]},
        {"text_id": 4, "text": "坏掉的图", "image_ids": [1003]},
        {"text_id": 5, "text": "蓝色或红色", "image_ids": [1004, 1001]},
        {"text_id": 3, "text": "重复的文本 id", "image_ids": [1002]},
        {"text_id": 6, "text": "  ", "image_ids": [1002]},
        {"text_id": 7, "text": "不存在的图", "image_ids": [9999]},
    ]
    write_cnclip(tmp_path, split, images, texts,
                 extra_img_lines=[b"1001\t" + b"AAAA", b"no_tab_here"],
                 extra_text_lines=[b"{not json", "坏编码".encode("gb18030"), b'{"text_id": 8, "text": "x"}'])
    return tmp_path


def test_cnclip_pairs_offsets_and_counts(tmp_path):
    ds = CnClipDataset(str(_cnclip(tmp_path)), "train", transform=T16, max_bad_fraction=0.9)
    # 每个 (文本, 图像) 对一个样本：1,2,3,4 各一对，5 两对
    assert len(ds) == 6
    assert ds.index_counter.to_dict()["by_reason"] == {
        "duplicate_id": 2, "malformed_row": 3, "empty_caption": 1, "unknown_image_id": 1, "bad_encoding": 1}
    # 按字节偏移读到的是正确的图：1004 是蓝色
    k = ds.pairs.index((4, "1004"))
    img, caption, label = ds.load(k)
    assert caption == "蓝色或红色" and label == -1
    assert img[2].mean() > img[0].mean()  # 蓝通道亮于红通道
    s = ds[3]  # 1003 是坏图 → 换成一个随机的好样本
    assert s[1] != "坏掉的图" and s.bad == ["corrupt_image"]
    with pytest.raises(BadSampleError, match=r"train_imgs\.tsv 第 5 行.*1001 重复"):
        CnClipDataset(str(tmp_path), "train", strict=True)


def test_cnclip_in_dataloader_workers_keeps_batches_and_counts(tmp_path):
    ds = CnClipDataset(str(_cnclip(tmp_path)), "train", transform=T16, max_bad_fraction=0.9)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    counter = BadSampleCounter.for_dataset(ds, max_bad_fraction=0.9)
    shapes = []
    for batch in loader:
        shapes.append(tuple(batch.images.shape))
        counter.update(batch)
    assert shapes == [(3, 3, 16, 16), (3, 3, 16, 16)]
    assert counter.counts["corrupt_image"] == 1  # 来自 worker 进程的计数回到了主进程


def test_cnclip_retrieval_set(tmp_path):
    _cnclip(tmp_path, split="valid")
    rs, classnames, templates = build_eval_dataset("cn-clip", str(tmp_path), 16, max_bad_fraction=0.9)
    assert classnames is None and templates is None
    assert rs.captions == ["红色的方块", "一块红色", "绿色的方块", "坏掉的图", "蓝色或红色"]
    assert rs.image_ids == ["1001", "1002", "1003", "1004"]
    assert rs.text_to_image.tolist() == [0, 0, 1, 2, 3]  # 多图的文本取第一张
    img, _, idx = rs.images[1]
    assert img.shape == (3, 16, 16) and idx == 1
    with pytest.raises(FileNotFoundError, match="test_imgs.tsv"):
        load_retrieval_set(str(tmp_path), "test")


# ---------------------------------------------------------------- WebDataset 分片

def _shard_csv(tmp_path, n=10):
    rows = [(f"{i}.png", f"第{i}张图", png_bytes((20 * i, 0, 0))) for i in range(n)]
    rows.append(("bad.jpg", "坏图", b"garbage"))
    return write_csv_folder(tmp_path / "src", rows)


def test_shard_cli_round_trip(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "shards"
    args = parser.parse_args(["data", "shard", "--csv", str(_shard_csv(tmp_path)), "--out", str(out),
                              "--shard-size", "4", "--max-bad-fraction", "0.5"])
    assert args.func(args) == 0
    assert '"written": 10' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"shard-00000{i}.tar" for i in range(3)]
    ds = build_wds_dataset(str(out / "shard-{000000..000002}.tar"), transform=T16, repeat=False, shuffle_buffer=0)
    samples = list(ds)
    assert [s[1] for s in samples] == [f"第{i}张图" for i in range(10)]
    assert samples[0][0].shape == (3, 16, 16) and samples[0][2] == -1


def test_wds_split_by_worker_and_node(tmp_path, monkeypatch):
    summary = write_shards(str(_shard_csv(tmp_path, n=8)), str(tmp_path / "sh"), shard_size=2,
                           max_bad_fraction=0.5)
    assert summary["shards"] == 4 and summary["bad_samples"]["by_reason"] == {"corrupt_image": 1}
    ds = build_wds_dataset(str(tmp_path / "sh"), transform=T16, repeat=False, shuffle_buffer=0)
    got = [c for b in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate) for c in b.captions]
    assert sorted(got) == sorted(f"第{i}张图" for i in range(8))  # 两个 worker 合起来每样本恰好一次
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append({s[1] for s in build_wds_dataset(str(tmp_path / "sh"), repeat=False, shuffle_buffer=0)})
    assert len(per_rank[0]) == len(per_rank[1]) == 4 and not per_rank[0] & per_rank[1]
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ValueError, match="分片数 4 少于 进程数 8"):
        next(iter(build_wds_dataset(str(tmp_path / "sh"))))


def test_wds_skips_bad_members_and_carries_counts(tmp_path):
    import webdataset as wds
    with wds.ShardWriter(str(tmp_path / "s-%06d.tar"), maxcount=100, verbose=0) as sink:
        sink.write({"__key__": "a", "png": png_bytes(), "txt": "好的".encode()})
        sink.write({"__key__": "b", "jpg": b"garbage", "txt": "坏图".encode()})
        sink.write({"__key__": "c", "png": png_bytes(), "txt": b"   "})
        sink.write({"__key__": "d", "png": png_bytes()})
        sink.write({"__key__": "e", "png": png_bytes(), "txt": "也是好的".encode()})
    samples = list(build_wds_dataset(str(tmp_path / "s-000000.tar"), T16, repeat=False, shuffle_buffer=0))
    assert [s[1] for s in samples] == ["好的", "也是好的"]
    assert samples[1].bad == ["corrupt_image", "empty_caption", "malformed_row"]
    with pytest.raises(BadSampleError, match=r"s-000000\.tar 中的样本 b"):
        list(build_wds_dataset(str(tmp_path / "s-000000.tar"), T16, repeat=False, shuffle_buffer=0, strict=True))
    # 截断的 tar：读到断处为止，不崩溃
    data = (tmp_path / "s-000000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    list(build_wds_dataset(str(tmp_path / "cut.tar"), T16, repeat=False, shuffle_buffer=0))


# ---------------------------------------------------------------- 零样本评估集

def test_cifar_missing_files_explain_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-python\.tar\.gz.*cifar-10-batches-py") as e:
        build_eval_dataset("cifar10", str(tmp_path), 16)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(e.value)
    assert "test_batch" in str(e.value) and "data_batch_1" not in str(e.value)  # 评估只需要测试集
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz"):
        pass
    with pytest.raises(FileNotFoundError, match="请先解压：tar xzf"):
        build_eval_dataset("cifar100", str(tmp_path), 16)


@pytest.mark.parametrize("n_classes", [10, 100])
def test_fake_cifar_in_torchvision_layout(tmp_path, n_classes):
    write_fake_cifar(tmp_path, n_classes)
    name = f"cifar{n_classes}"
    ds, classnames, templates = build_eval_dataset(name, str(tmp_path), 16)
    names = CIFAR10_CLASSNAMES_ZH if n_classes == 10 else CIFAR100_CLASSNAMES_ZH
    assert classnames == names and len(set(names)) == n_classes
    assert all("{}" in t for t in templates) and "一张{}的照片。" in templates
    img, caption, label = ds[3]
    assert img.shape == (3, 16, 16) and label == 3 and caption == names[3]
    assert len(ds) == 6
    folder = "cifar-10-batches-py" if n_classes == 10 else "cifar-100-python"
    assert len(build_eval_dataset(name, str(tmp_path / folder), 16, split="train")[0]) == (30 if n_classes == 10 else 6)


def _image_folder(tmp_path):
    for folder, color in (("cat", COLORS["红"]), ("dog", COLORS["绿"]), ("hot_dog", COLORS["蓝"])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(png_bytes(color))
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"garbage")
    return tmp_path


def test_imagefolder_chinese_mapping(tmp_path):
    root = _image_folder(tmp_path)
    ds, classnames, templates = build_eval_dataset("imagefolder", str(root), 16, max_bad_fraction=0.5)
    assert classnames == ["cat", "dog", "hot dog"] and "{}" in templates[0]
    (root / "classnames_zh.txt").write_text("猫\n狗\n热狗\n", encoding="utf-8")
    assert ImageFolderZh(str(root), max_bad_fraction=0.5).classnames == ["猫", "狗", "热狗"]
    (root / "classnames_zh.txt").write_text("dog\t小狗\n", encoding="utf-8")
    assert ImageFolderZh(str(root), max_bad_fraction=0.5).classnames == ["cat", "小狗", "hot dog"]
    (root / "classnames_zh.json").write_text('{"cat": "猫咪", "hot_dog": "热狗"}', encoding="utf-8")
    ds = ImageFolderZh(str(root), transform=T16, max_bad_fraction=0.5)
    assert ds.classnames == ["猫咪", "dog", "热狗"]
    assert ImageFolderZh(str(root), classnames={"dog": "狗"}, max_bad_fraction=0.5).classnames[1] == "狗"
    with pytest.raises(ValueError, match="不存在的文件夹：\\['cow'\\]"):
        ImageFolderZh(str(root), classnames={"cow": "牛"})
    assert [p.split("/")[-2:] for p, _ in ds.samples][2] == ["dog", "broken.jpg"]
    s = ds[2]  # dog/broken.jpg 坏了 → 换成下一个（hot_dog/a.png）
    assert s[1:3] == ("热狗", 2) and s.bad == ["corrupt_image"]
    with pytest.raises(BadSampleError, match=r"broken\.jpg"):
        ImageFolderZh(str(root), transform=T16, strict=True)[2]


# ---------------------------------------------------------------- 工厂

def test_factory_builds_every_real_source(tmp_path):
    (tmp_path / "c").mkdir()
    path, _ = _mixed_csv(tmp_path / "c")
    csv_ds = build_train_dataset(TrainConfig(dataset="csv", data_path=str(path), max_bad_fraction=0.5), 16)
    assert len(csv_ds) == 5 and csv_ds[0][0].shape == (3, 16, 16)
    cn = build_train_dataset(TrainConfig(dataset="cn-clip", data_path=str(_cnclip(tmp_path / "cn")),
                                         max_bad_fraction=0.9), 16)
    assert len(cn) == 6
    write_shards(str(_shard_csv(tmp_path, n=4)), str(tmp_path / "sh"), shard_size=2, max_bad_fraction=0.5)
    stream = iter(build_train_dataset(TrainConfig(dataset="wds", data_path=str(tmp_path / "sh")), 16))
    captions = [next(stream)[1] for _ in range(12)]  # repeat=True：无限循环，超过 4 个样本也不停
    assert set(captions) == {f"第{i}张图" for i in range(4)}
    with pytest.raises(ValueError, match="--data-path"):
        build_train_dataset(TrainConfig(dataset="csv"), 16)
    with pytest.raises(ValueError, match="未知数据集"):
        build_train_dataset(TrainConfig(dataset="imagenet"), 16)


def test_factory_builtin_and_collate_on_plain_tuples():
    ds = build_train_dataset(TrainConfig(dataset="shapes", seed=1, max_objects=2), 16)
    batch = collate([ds[i] for i in range(4)])
    assert batch.images.shape == (4, 3, 16, 16) and batch.bad == {} and batch.seen == 4
    assert ds.max_objects == 2 and ds.seed == 1
    digits = build_train_dataset(TrainConfig(dataset="digits"), 16)
    img, caption, label = digits[0]
    assert img.shape == (3, 16, 16) and isinstance(caption, str) and 0 <= label < 10


def test_cli_data_shard_entry_point(tmp_path, capsys):
    from clipedu.cli import main
    out = tmp_path / "shards"
    rc = main(["data", "shard", "--csv", str(_shard_csv(tmp_path, n=3)), "--out", str(out), "--shard-size", "2",
               "--max-bad-fraction", "0.5"])
    assert rc == 0 and len(list(out.glob("*.tar"))) == 2
    assert "--dataset wds" in capsys.readouterr().out
    assert main(["data", "shard", "--csv", str(_shard_csv(tmp_path, n=3)), "--out", str(tmp_path / "o2")]) == 1
    assert "坏样本比例" in capsys.readouterr().err  # 1/4 坏图超过默认的 1%：清楚的中文报错，不是调用栈


def test_evaluate_retrieval_on_cnclip_set(tmp_path):
    from clipedu.config import CLIPConfig, TextConfig, VisionConfig
    from clipedu.eval_tasks import evaluate_retrieval
    from clipedu.model import create_model
    from clipedu.tokenizer import ChineseTokenizer
    torch.manual_seed(0)
    cfg = CLIPConfig(embed_dim=16, vision=VisionConfig(image_size=16, patch_size=8, width=32, layers=1, heads=2),
                     text=TextConfig(context_length=16, width=32, heads=2, layers=1))
    _cnclip(tmp_path, split="valid")
    rs, _, _ = build_eval_dataset("cn-clip", str(tmp_path), 16, max_bad_fraction=0.9)
    m = evaluate_retrieval(create_model(cfg), ChineseTokenizer(context_length=16), rs, batch_size=2)
    assert m["n_images"] == 4 and m["n_texts"] == 5 and m["bad_samples"] == rs.bad_samples.bad > 0
    assert 0.0 <= m["t2i_R@1"] <= m["t2i_R@5"] == 1.0  # 只有 4 张图：正确答案一定在前 5
    assert 1.0 <= m["i2t_mean_rank"] <= 5.0

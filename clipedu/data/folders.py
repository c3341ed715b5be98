"""零样本评估集：ImageFolder（带中文类名映射）与 CIFAR-10/100（见第 6 章 sec-zero-shot-real）。

样本都是 ``(image, 中文类名, label)``，可以直接交给 ``clipedu.evaluate.encode_dataset``。
一切只读本地文件：CIFAR 用 torchvision 的 ``download=False``，缺文件时报错并说明去哪里下载、放在哪里。
"""
from __future__ import annotations

import json
import os
import pickle
from typing import Callable, Optional

from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .robust import RobustDataset, decode_image

CIFAR10_CLASSNAMES_ZH = ["飞机", "汽车", "鸟", "猫", "鹿", "狗", "青蛙", "马", "船", "卡车"]

# 顺序与 torchvision 的 CIFAR100.classes（英文名按字母序）一致
CIFAR100_CLASSNAMES_ZH = [
    "苹果", "水族馆里的鱼", "婴儿", "熊", "河狸", "床", "蜜蜂", "甲虫", "自行车", "瓶子",
    "碗", "男孩", "桥", "公共汽车", "蝴蝶", "骆驼", "易拉罐", "城堡", "毛毛虫", "牛",
    "椅子", "黑猩猩", "钟", "云", "蟑螂", "沙发", "螃蟹", "鳄鱼", "杯子", "恐龙",
    "海豚", "大象", "比目鱼", "森林", "狐狸", "女孩", "仓鼠", "房子", "袋鼠", "键盘",
    "台灯", "割草机", "豹子", "狮子", "蜥蜴", "龙虾", "男人", "枫树", "摩托车", "山",
    "老鼠", "蘑菇", "橡树", "橙子", "兰花", "水獭", "棕榈树", "梨", "皮卡车", "松树",
    "平原", "盘子", "罂粟花", "豪猪", "负鼠", "兔子", "浣熊", "鳐鱼", "公路", "火箭",
    "玫瑰", "大海", "海豹", "鲨鱼", "鼩鼱", "臭鼬", "摩天大楼", "蜗牛", "蛇", "蜘蛛",
    "松鼠", "有轨电车", "向日葵", "甜椒", "桌子", "坦克", "电话", "电视机", "老虎", "拖拉机",
    "火车", "鳟鱼", "郁金香", "乌龟", "衣柜", "鲸鱼", "柳树", "狼", "女人", "蠕虫",
]

# CIFAR 的中文提示模板：照 CLIP 论文给 CIFAR 用的模板意译（低分辨率、模糊、像素化……）
CIFAR_TEMPLATES = [
    "一张{}的照片。",
    "一张{}的模糊照片。",
    "一张{}的低分辨率照片。",
    "一张{}的像素化照片。",
    "一张{}的黑白照片。",
    "一张很小的{}的照片。",
    "一张很大的{}的照片。",
    "一张{}的特写照片。",
    "一幅{}的画。",
    "一张{}的卡通图。",
    "这是一个{}。",
    "{}",
]

class _TrustLocalFiles:
    """torchvision 每次构造都对 160 MB 的文件算 MD5；文件齐全（_cifar_root 已查过）就信任它，
    这样构造快，测试也能用小的假数据。pickle 格式与 torchvision 自己读的完全相同。"""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR10Local(_TrustLocalFiles, CIFAR10):
    pass


class _CIFAR100Local(_TrustLocalFiles, CIFAR100):
    pass


_CIFAR = {
    "cifar10": (_CIFAR10Local, "cifar-10-batches-py", "cifar-10-python.tar.gz", CIFAR10_CLASSNAMES_ZH),
    "cifar100": (_CIFAR100Local, "cifar-100-python", "cifar-100-python.tar.gz", CIFAR100_CLASSNAMES_ZH),
}


def _cifar_root(name: str, root: str, train: bool = False) -> str:
    """找到含 ``cifar-10-batches-py`` 的目录；缺文件时说清楚怎么办。只检查所选划分要用的文件。"""
    cls, folder, archive, _ = _CIFAR[name]
    root = os.path.abspath(os.path.expanduser(root))
    # 用户也可能直接把解压出的文件夹本身当作 root
    base = os.path.dirname(root) if os.path.basename(root.rstrip(os.sep)) == folder else root
    files = [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]
    missing = [f for f in files if not os.path.isfile(os.path.join(base, folder, f))]
    if not missing:
        return base
    url = f"https://www.cs.toronto.edu/~kriz/{archive}"
    hint = (f"在 {base} 里发现了压缩包，请先解压：tar xzf {os.path.join(base, archive)} -C {base}"
            if os.path.isfile(os.path.join(base, archive)) else
            f"请在有网络的机器上下载 {url}（约 160 MB），再解压：tar xzf {archive} -C {base}")
    raise FileNotFoundError(
        f"找不到 {name.upper()} 数据：{os.path.join(base, folder)} 下缺少 {missing}。{hint}；"
        f"解压后应得到 {os.path.join(base, folder)}/（含 {', '.join(files)}）。"
        "本库从不联网下载（download=False） / CIFAR files not found"
    )


class CifarZh(RobustDataset):
    """CIFAR-10/100 测试集（或训练集），样本为 ``(image, 中文类名, label)``。"""

    def __init__(self, name: str, root: str, train: bool = False, transform: Optional[Callable] = None):
        if name not in _CIFAR:
            raise ValueError(f"未知数据集 {name!r}；可选：{', '.join(_CIFAR)}")
        super().__init__()
        cls, _, _, names = _CIFAR[name]
        base = _cifar_root(name, root, train)
        self.base = cls(base, train=train, download=False)
        if len(self.base.classes) != len(names):
            raise ValueError(f"{name} 的类别数应为 {len(names)}，文件里是 {len(self.base.classes)}")
        self.transform, self.classnames = transform, list(names)
        self.finish_index(len(self.base))

    def __len__(self) -> int:
        return len(self.base)

    def load(self, i: int) -> tuple:
        image, label = self.base[i]  # PIL RGB 图像（torchvision 从 numpy 数组构造，不会坏）
        return (self.transform(image) if self.transform else image), self.classnames[label], int(label)


def read_classnames_zh(root: str, folders: list[str], mapping: Optional[dict] = None) -> list[str]:
    """文件夹名 → 中文类名。优先用 ``mapping``，其次 root 下的 classnames_zh.json / classnames_zh.txt。

    - json：``{"dog": "狗", ...}``；
    - txt：每行 ``文件夹名<TAB>中文名``，或者每行一个中文名、按文件夹名排序的顺序。
    没有映射的类别沿用文件夹名（下划线换成空格）。
    """
    if mapping is None:
        mapping = _read_mapping_file(root, folders)
    unknown = sorted(set(mapping) - set(folders))
    if unknown:
        raise ValueError(f"类名映射里有 {root} 下不存在的文件夹：{unknown}；现有文件夹：{folders}")
    return [str(mapping.get(f, f.replace("_", " "))).strip() for f in folders]


def _read_mapping_file(root: str, folders: list[str]) -> dict:
    path_json, path_txt = os.path.join(root, "classnames_zh.json"), os.path.join(root, "classnames_zh.txt")
    if os.path.isfile(path_json):
        with open(path_json, encoding="utf-8") as f:
            mapping = json.load(f)
        if not isinstance(mapping, dict):
            raise ValueError(f"{path_json} 应为 {{文件夹名: 中文名}} 的 JSON 对象，实际为 {type(mapping).__name__}")
        return mapping
    if not os.path.isfile(path_txt):
        return {}
    with open(path_txt, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    if all("\t" in ln for ln in lines):
        return dict(ln.split("\t", 1) for ln in lines)
    if len(lines) != len(folders):
        raise ValueError(f"{path_txt} 有 {len(lines)} 行，但 {root} 下有 {len(folders)} 个类别文件夹；"
                         "每行一个中文名（按文件夹名排序），或每行 '文件夹名<TAB>中文名'")
    return dict(zip(folders, lines))


class ImageFolderZh(RobustDataset):
    """``root/类别文件夹/图像`` 布局的数据集，类名映射成中文；样本为 ``(image, 中文类名, label)``。"""

    def __init__(self, root: str, transform: Optional[Callable] = None, classnames: Optional[dict] = None,
                 strict: bool = False, max_bad_fraction: float = 0.01):
        super().__init__(strict, max_bad_fraction)
        root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"找不到目录 {root}；ImageFolder 应为 root/类别名/图像文件 的布局")
        try:
            self.folders, class_to_idx = find_classes(root)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{root} 下没有类别子文件夹；应为 root/类别名/图像文件 的布局（{e}）") from None
        self.samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        self.classnames = read_classnames_zh(root, self.folders, classnames)
        self.root, self.transform = root, transform
        self.finish_index(len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple:
        path, label = self.samples[i]
        image = decode_image(path, f"{path}（第 {i} 个样本）")
        return (self.transform(image) if self.transform else image), self.classnames[label], label


__all__ = ["CIFAR10_CLASSNAMES_ZH", "CIFAR100_CLASSNAMES_ZH", "CIFAR_TEMPLATES", "CifarZh",
           "ImageFolderZh", "read_classnames_zh"]

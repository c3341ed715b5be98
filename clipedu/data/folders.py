"""零样本评估集：ImageFolder（带中文类名映射）与 CIFAR-10/100（见第 6 章 sec-zero-shot-real）。

样本都是 ``(image, 中文类名, label)``，可以直接交给 ``clipedu.evaluate.encode_dataset``。
一切只读本地文件，缺文件时报错并说明去哪里下载、放在哪里。CIFAR 的批文件是 pickle，
这里用只认 numpy 数组的受限反序列化读它（torchvision 的读法会执行文件里的任意代码）。
"""
from __future__ import annotations

import json
import os
import pickle
import stat
from typing import Callable, Optional

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import CorruptFileError
from ..outdir import require_dir
from .robust import BadSample, RobustDataset, decode_image, open_regular

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

_CIFAR_FILES = {  # (训练批, 测试批, 元数据文件, 元数据里的类名键, 批里的标签键)，与 torchvision 相同
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "label_names", "labels"),
    "cifar100": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}
_CIFAR_MAX_BYTES = 512 * 2**20  # 真实的批文件约 30–160 MB


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR 的批文件是 pickle：普通的 pickle.load 会执行文件里任意的 ``__reduce__``，一个篡改过的
    ``test_batch`` 就能在你的机器上运行代码。这里只允许重建 numpy 数组所需的几个名字，其余一律拒绝。"""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # Python 3 用协议 2 写 bytes 时的编码方式
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"global {module}.{name}")


class _RefusedGlobal(pickle.UnpicklingError):
    """文件要求一个不许可的全局名字（恶意载荷的样子）；乱码、截断的 pickle 抛的是别的 UnpicklingError。"""


def _load_cifar_pickle(path: str) -> dict:
    """安全地读一个 CIFAR 批文件：普通文件、有大小上限、受限反序列化，返回键为 str 的 dict。"""
    try:
        with open_regular(path, _CIFAR_MAX_BYTES) as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as e:
        raise ValueError(
            f"拒绝加载 {path}：文件要求执行 {str(e).removeprefix('global ')}，这不是 CIFAR 数据（只含数组、列表与字符串），"
            "没有执行任何代码。请从官方地址重新下载解压 / refused unsafe pickle") from None
    except BadSample as e:
        raise ValueError(f"{path} {e.detail}；请重新下载 CIFAR / invalid CIFAR file") from None
    except Exception as e:  # noqa: BLE001  截断或乱码的 pickle 会抛各种异常
        raise CorruptFileError(f"{path} 已损坏或不是 CIFAR 的 python 版批文件（{type(e).__name__}: {e}）；"
                               "请重新下载解压 / corrupt CIFAR file") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} 应为 dict，实际为 {type(obj).__name__} / invalid CIFAR file")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _read_cifar(name: str, base: str, train: bool):
    """读出 ``(图像 uint8 [N, 32, 32, 3], 标签 list[int], 英文类名)``，并检查形状、类型与取值范围。"""
    import numpy as np

    train_files, test_files, meta_file, names_key, label_key = _CIFAR_FILES[name]
    folder = os.path.join(base, _CIFAR[name][1])
    meta_path = os.path.join(folder, meta_file)
    classes = _load_cifar_pickle(meta_path).get(names_key)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{meta_path} 缺少类名列表 {names_key!r} / invalid CIFAR meta file")
    datas, labels = [], []
    for fname in (train_files if train else test_files):
        path = os.path.join(folder, fname)
        batch = _load_cifar_pickle(path)
        data, y = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path} 的 data 应为 uint8 的 [N, 3072] 数组 / invalid CIFAR batch")
        if not isinstance(y, list) or len(y) != len(data) or not all(
                isinstance(v, int) and 0 <= v < len(classes) for v in y):
            raise ValueError(f"{path} 的 {label_key} 应为 {len(data)} 个 [0, {len(classes)}) 内的整数 / invalid CIFAR batch")
        datas.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(y)
    return np.concatenate(datas), labels, classes


_CIFAR = {
    "cifar10": (None, "cifar-10-batches-py", "cifar-10-python.tar.gz", CIFAR10_CLASSNAMES_ZH),
    "cifar100": (None, "cifar-100-python", "cifar-100-python.tar.gz", CIFAR100_CLASSNAMES_ZH),
}


def _cifar_root(name: str, root: str, train: bool = False) -> str:
    """找到含 ``cifar-10-batches-py`` 的目录；缺文件时说清楚怎么办。只检查所选划分要用的文件。"""
    _, folder, archive, _ = _CIFAR[name]
    train_files, test_files, meta_file, _, _ = _CIFAR_FILES[name]
    root = os.path.abspath(os.path.expanduser(root))
    # 用户也可能直接把解压出的文件夹本身当作 root
    base = os.path.dirname(root) if os.path.basename(root.rstrip(os.sep)) == folder else root
    files = list(train_files if train else test_files) + [meta_file]
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
        names = _CIFAR[name][3]
        base = _cifar_root(name, root, train)
        self.data, self.targets, classes = _read_cifar(name, base, train)
        if len(classes) != len(names):
            raise ValueError(f"{name} 的类别数应为 {len(names)}，文件里是 {len(classes)} / wrong number of classes")
        self.transform, self.classnames = transform, list(names)
        self.finish_index(len(self.targets))

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int) -> tuple:
        image = Image.fromarray(self.data[i])  # RGB；由 uint8 数组构造，不会坏
        label = self.targets[i]
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


def _read_small_text(path: str, max_bytes: int = 16 * 2**20) -> str:
    """类名映射这样的小文本文件：只读普通文件、有大小上限、必须是 UTF-8。"""
    try:
        with open_regular(path, max_bytes) as f:
            return f.read().decode("utf-8")
    except BadSample as e:
        raise ValueError(f"{path} {e.detail} / not a regular file or too large") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} 不是 UTF-8 编码（{e.reason}） / bad encoding") from None


def scan_image_folder(root: str) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, str]]]:
    """``root/类别/…/图像`` → (类别文件夹名, [(图像路径, 类别号)], [(重复的路径, 原因)])。

    与 torchvision 的 make_dataset 不同：类别文件夹本身可以是符号链接，但类别内部的目录符号链接不跟随
    （指回 root 的链接会造成无限循环或把别的类别的图算进来），同一个文件（同一 inode）只收一次；
    只收普通文件，FIFO、设备即使扩展名像图像也不收。
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=True))
    samples, skipped, seen_files, seen_dirs = [], [], set(), set()
    exts = tuple(e.lower() for e in IMG_EXTENSIONS)
    for label, name in enumerate(classes):
        top = os.path.join(root, name)
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen_dirs:
            skipped.append((top, "duplicate_id"))
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames.sort()
            for fname in sorted(filenames):
                path = os.path.join(dirpath, fname)
                if not fname.lower().endswith(exts):
                    continue
                try:
                    fst = os.stat(path)
                except OSError:
                    skipped.append((path, "missing_file"))
                    continue
                if not stat.S_ISREG(fst.st_mode):
                    skipped.append((path, "not_regular_file"))
                elif (fst.st_dev, fst.st_ino) in seen_files:
                    skipped.append((path, "duplicate_id"))
                else:
                    seen_files.add((fst.st_dev, fst.st_ino))
                    samples.append((path, label))
    return classes, samples, skipped


def _read_mapping_file(root: str, folders: list[str]) -> dict:
    path_json, path_txt = os.path.join(root, "classnames_zh.json"), os.path.join(root, "classnames_zh.txt")
    if os.path.exists(path_json):
        try:
            mapping = json.loads(_read_small_text(path_json))
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path_json} 不是合法 JSON：{str(e)[:80]} / invalid JSON") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{path_json} 应为 {{文件夹名: 中文名}} 的 JSON 对象，实际为 {type(mapping).__name__}")
        return mapping
    if not os.path.exists(path_txt):
        return {}
    lines = [ln.strip() for ln in _read_small_text(path_txt).splitlines() if ln.strip()]
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
        root = os.path.abspath(require_dir(root, "ImageFolder 目录（root/类别名/图像文件）", "--root"))
        self.folders, self.samples, skipped = scan_image_folder(root)
        if not self.folders:
            raise FileNotFoundError(f"{root} 下没有类别子文件夹；应为 root/类别名/图像文件 的布局 / no class folders")
        for path, reason in skipped:
            self.index_problem(BadSample(reason, path, "重复的文件或目录、或不是普通文件，跳过"))
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

"""clipedu.data：内置数据集（几何图形世界、手写数字）与图像变换（见第 3 章 sec-step-data）。

图形问答 ``ShapesVQADataset`` 属于第 2 章的实验，在 ``clipedu.labs.vqa``。

每行一个导入，其他数据模块（真实数据）在下面追加即可。
"""
from .transforms import CLIP_MEAN, CLIP_STD, denormalize, eval_transform, normalize_uint8, train_transform
from .shapes import ShapesDataset
from .digits import DigitsDataset
# 真实数据（见第 5 章 sec-code-data-real）；wds/shard 依赖 webdataset，按需从子模块导入
from .robust import BadSampleCounter, BadSampleError, Batch, collate, decode_image
from .csv import CsvDataset
from .cnclip import CnClipDataset, RetrievalSet, load_retrieval_set
from .folders import CIFAR10_CLASSNAMES_ZH, CIFAR100_CLASSNAMES_ZH, CIFAR_TEMPLATES, CifarZh, ImageFolderZh
from .factory import build_train_dataset
from .eval_sets import build_eval_dataset

"""_toc.yml 里的页面，按目录顺序（读者从头读到尾的顺序）。

浏览器测试（tests/browser/pages.py）、章节编号检查与笔记本计时（benchmarks/notebook_timing.py）共用它。
"""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """按目录顺序列出 _toc.yml 里（未注释的）全部文件，不带扩展名，如 ``book/preface``。"""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    for key in ("parts", "chapters"):
        walk(toc.get(key))
    return [str(Path(f).with_suffix("")) if f.endswith((".md", ".ipynb")) else f for f in files]


def toc_notebooks(toc_path: Path = ROOT / "_toc.yml") -> list[Path]:
    """目录里的笔记本（.ipynb 的绝对路径），按书中顺序。"""
    root = toc_path.parent
    return [root / f"{f}.ipynb" for f in toc_files(toc_path) if f.startswith("notebooks/")]

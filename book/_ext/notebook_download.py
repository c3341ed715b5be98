"""网页上每个笔记本页面的下载按钮给的是不带输出的 .ipynb（见教学指南 sec-teaching-editions）。

sphinx-book-theme 的“下载 → .ipynb”指向 ``_sources/<文档>.ipynb``，那是 Sphinx 从构建副本里复制的
源文件，而副本里的笔记本已由构建脚本执行过，带着全部输出（图、进度条、几百 KB 的 base64）。
学生要的是和仓库里一样干净、可以对着自己装好的 ``clipedu`` 从头运行的笔记本，所以构建结束后
（build-finished）把 ``_sources`` 里的每个笔记本换成清掉输出的版本：输出、执行计数、执行时间
与 ipywidgets 的状态都去掉，单元与元数据的其余部分不动。学生版的副本里已经删掉了解答，
所以学生版下载到的笔记本同样没有解答。
"""
from __future__ import annotations

import json
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)


def clear_outputs(nb: dict) -> dict:
    """返回去掉输出与执行痕迹的笔记本（不修改传入的字典）。"""
    cells = []
    for cell in nb.get("cells", []):
        cell = dict(cell)
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k not in ("execution", "scrolled")}
        cell["metadata"] = meta
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    metadata = {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}
    return {**nb, "cells": cells, "metadata": metadata}


def write_clean_sources(app, exc) -> None:
    """build-finished：把 _sources 里每个笔记本换成不带输出的版本。"""
    if exc is not None or app.builder.format != "html":
        return
    count = 0
    for docname in sorted(app.env.found_docs):
        if Path(app.env.doc2path(docname)).suffix != ".ipynb":
            continue
        target = Path(app.outdir) / "_sources" / f"{docname}.ipynb"
        if not target.is_file():
            logger.warning(f"没有找到笔记本的下载文件 {target}（notebook download missing）", location=docname)
            continue
        nb = json.loads(target.read_text(encoding="utf-8"))
        target.write_text(json.dumps(clear_outputs(nb), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        count += 1
    logger.info(f"notebook_download：{count} 个笔记本的下载文件已清掉输出")


def setup(app):
    app.connect("build-finished", write_clean_sources)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""页脚的版权年份在构建时取当年（设了 SOURCE_DATE_EPOCH 时取它的年份，便于可复现构建）。

_config.yml 里 ``copyright`` 写成 ``"%Y"`` 或 ``"2024-%Y"`` 这样带占位符的形式，
这里在 Sphinx 读完配置后把 ``%Y`` 换成年份。
"""
from __future__ import annotations

import os
import time


def build_year() -> str:
    """构建年份：SOURCE_DATE_EPOCH 的年份，没有设置时为本地当年。"""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return str(time.gmtime(int(epoch)).tm_year if epoch else time.localtime().tm_year)


def _fill_year(app, config) -> None:
    if isinstance(config.copyright, str):
        config.copyright = config.copyright.replace("%Y", build_year())


def setup(app):
    app.connect("config-inited", _fill_year, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

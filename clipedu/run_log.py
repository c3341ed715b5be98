"""训练日志：log.jsonl（每步一行）、metrics.json（汇总）与可选的 TensorBoard。

见第 5 章 sec-code-logging。

只有 0 号进程写文件；其余进程拿到一个 ``enabled=False`` 的记录器，所有方法都不做事。
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional


def _json_safe(value):
    """NaN/inf 不是合法 JSON；写成字符串，读日志的人一眼能看到。"""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def read_log(path: str | os.PathLike) -> list[dict]:
    """读回 log.jsonl；被 SIGKILL 截断的最后半行会被忽略。

    逆温度 1/τ 的键是 ``inv_temperature``；旧版日志把它记成 ``logit_scale``
    （同样是 1/τ），读回时补上新键，旧日志照样能画图。
    """
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    # [hardening] 坏行只丢它自己：被杀时写了一半的末行、或中间被损坏的一行，都不影响其后的记录
    for line in p.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # 只丢这一行：被杀时写了一半的行、中间坏掉的行，或嵌套几万层的行
        if not isinstance(record, dict):
            continue
        if "logit_scale" in record and "inv_temperature" not in record:
            record["inv_temperature"] = record["logit_scale"]  # 旧日志的键名
        records.append(record)
    return records


class RunLogger:
    """把每步记录写进 log.jsonl（和 TensorBoard）；续训时先把日志截到检查点那一步。"""

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True,
                 tensorboard: bool = False, resume_step: Optional[int] = None):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.log_path = self.out_dir / "log.jsonl"
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.log_path, self.out_dir / "metrics.json"):
            if os.path.lexists(path) and not os.path.isfile(path):  # 写 FIFO 会一直等读者，写设备会丢掉日志
                from .errors import UsageError
                raise UsageError(f"{path} 不是普通文件（目录、FIFO、设备或断开的链接）；删掉它，"
                                 "或换一个 --out / not a regular file")
        if resume_step is None:
            self.log_path.write_text("", encoding="utf-8")  # 新训练：清空旧日志
        else:
            # 被杀的进程可能已经记下了检查点之后的几步；这些步会重跑，旧记录要丢掉
            kept = [r for r in read_log(self.log_path)
                    if int(r.get("step", 0)) <= resume_step]
            lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
            self.log_path.write_text("".join(lines), encoding="utf-8")
        self._file = open(self.log_path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # 需要 tensorboard 包
            self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"),
                                     purge_step=resume_step)

    def log(self, record: dict) -> None:
        """写一行；flush 让训练中途被杀时日志也完整到上一步。"""
        if not self.enabled:
            return
        self._file.write(json.dumps(_json_safe(record), ensure_ascii=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(record["step"])
            for key, value in record.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if key != "step" and number:
                    self._tb.add_scalar(key, value, step)

    def write_metrics(self, summary: dict) -> None:
        """metrics.json：先写临时文件再替换，读者永远看不到写了一半的 JSON。"""
        if not self.enabled:
            return
        path = self.out_dir / "metrics.json"
        tmp = path.with_name(".metrics.json.tmp")
        text = json.dumps(_json_safe(summary), ensure_ascii=False, indent=2)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

"""`.ci/run` 的墙钟用时：在新克隆上跑一遍，可选地同时开 N 个忙进程模拟繁忙机器（issue 16）。

    python benchmarks/ci_timing.py                     # 空闲：新克隆 + CI=true bash .ci/run
    python benchmarks/ci_timing.py --busy 6            # 6 个 nice 0 的忙进程（while True），负载约 8
    python benchmarks/ci_timing.py --busy 6 --write    # 结果追加到 benchmarks/results/ci_timing.md

克隆的是当前仓库已提交的 HEAD（与 CI 看到的相同）；每一步的用时取自 scripts/test.sh 最后打印的“用时汇总”。
忙进程在 CI 结束（或失败）时一并停掉；克隆目录测完即删（--keep DIR 时保留）。
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from clipedu.benchmarking import busy_processes, describe_cpu, git_head, machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ci_timing.md"
STEP_LINE = re.compile(r"^(\S.*?)\s+(\d+)s\b")


def sample_load(stop: threading.Event, out: list) -> None:
    while not stop.wait(30):
        out.append(os.getloadavg()[0])


def run_ci(busy: int, keep_log: Path, keep: Path | None = None) -> tuple[int, float, str, list[float]]:
    loads, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_load, args=(stop, loads), daemon=True)
    sampler.start()
    try:
        with busy_processes(busy), tempfile.TemporaryDirectory(prefix="ci_timing_") as tmp:
            clone = keep if keep is not None else Path(tmp) / "repo"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            t0 = time.perf_counter()
            with open(keep_log, "w", encoding="utf-8") as log:
                rc = subprocess.call(["bash", ".ci/run"], cwd=clone, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "CI": "true"})
            wall = time.perf_counter() - t0
    finally:
        stop.set()
    text = keep_log.read_text(encoding="utf-8", errors="replace")
    summary = text[text.rfind("用时汇总"):] if "用时汇总" in text else ""
    return rc, wall, summary, loads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=0, help="同时运行的忙进程数（默认 0，即空闲）")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "ci_timing.log",
                        help="CI 的完整输出写到这里")
    parser.add_argument("--keep", type=Path, default=None,
                        help="把克隆放在这个（尚不存在的）目录并保留，便于查看 _build/ 里的书与截图")
    parser.add_argument("--write", action="store_true", help=f"把结果追加到 {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.busy < 0:
        parser.error("--busy 不能为负")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} 已存在；请给一个新目录")
    commit = git_head(ROOT)
    machine = machine_info()
    start_load = os.getloadavg()[0]
    rc, wall, summary, loads = run_ci(args.busy, args.log, args.keep)
    steps = []
    for line in summary.splitlines()[1:]:
        m = STEP_LINE.match(line.strip())
        if m:
            steps.append((m.group(1), int(m.group(2))))
    mean_load = sum(loads) / len(loads) if loads else start_load
    block = (f"\n### {dt.date.today()}，提交 `{commit}`，忙进程 {args.busy} 个\n\n"
             f"- 机器：{describe_cpu(machine)}；1 分钟平均负载开始时 {start_load:.1f}，运行中平均 {mean_load:.1f}\n"
             f"- 各步：" + "；".join(f"{name} {sec} s" for name, sec in steps) + "\n"
             f"- 合计：**{wall / 60:.1f} 分钟**，{'通过' if rc == 0 else f'失败（退出码 {rc}）'}\n")
    print(summary or f"（没有找到用时汇总，见 {args.log}）")
    print(block)
    if args.write:
        if not RESULTS.exists():
            RESULTS.write_text("# `.ci/run` 的用时（新克隆，空闲与模拟繁忙）\n", encoding="utf-8")
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(block)
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""每个笔记本单独运行（像读者那样，线程数由 setup_notebook 决定）的墙钟用时：空闲，与同时开 N 个忙进程时（issue 16）。

    python benchmarks/notebook_timing.py                          # 全部笔记本，空闲与 1 个忙进程各跑一遍
    python benchmarks/notebook_timing.py 02_diffusion 02_fusion   # 只跑这几个
    python benchmarks/notebook_timing.py --busy 0                 # 只测空闲
    python benchmarks/notebook_timing.py --write                  # 结果追加到 benchmarks/results/notebook_timing.md

每一遍用一个新的空模型缓存（``CLIPEDU_CACHE``），按书中顺序运行，与读者第一次从头读到尾时相同：
几个笔记本共用的 CLIP 由第一个用到它的笔记本训练，后面的直接还原。笔记本按固定步数训练，
所以机器忙时变的只是用时，不是结果。
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from book_toc import toc_notebooks  # noqa: E402
from clipedu.benchmarking import busy_processes, describe_cpu, git_head, machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "notebook_timing.md"
GOAL_S = 120.0


def book_order() -> list[Path]:
    """_toc.yml 里笔记本出现的顺序（读者从头读到尾的顺序）。"""
    return toc_notebooks(ROOT / "_toc.yml")


def run_notebook(path: Path, cache: Path, threads: int, timeout: int) -> tuple[float, bool]:
    """用 nbclient 在新内核里从头执行一个笔记本（不写回文件），返回 (墙钟秒数, 是否成功)。"""
    code = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        f"NotebookClient(nb, timeout={timeout}, kernel_name='python3',\n"
        "               resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(CLIPEDU_CACHE=str(cache), MPLBACKEND="Agg")
    if threads:  # 0：像读者那样由 setup_notebook 决定（2 个线程；开场时别的进程占着核就只用 1 个）
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(path.parent)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return wall, proc.returncode == 0


def one_pass(notebooks: list[Path], busy: int, threads: int, timeout: int) -> dict[str, tuple[float, bool]]:
    with busy_processes(busy), tempfile.TemporaryDirectory(prefix="nb_cache_") as cache:
        out = {}
        for nb in notebooks:
            out[nb.stem] = run_notebook(nb, Path(cache), threads, timeout)
            wall, ok = out[nb.stem]
            print(f"  忙进程 {busy}：{nb.stem:22s} {wall:6.1f} s{'' if ok else '  失败'}", flush=True)
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="笔记本名（不带 .ipynb）；默认 notebooks/ 下全部")
    parser.add_argument("--busy", default="0,1", help="每一遍的忙进程数，逗号分隔（默认 0,1）")
    parser.add_argument("--threads", type=int, default=0,
                        help="笔记本的 torch 线程数（默认 0：像读者那样由 setup_notebook 按空闲的核决定）")
    parser.add_argument("--timeout", type=int, default=3600, help="每个单元格的时间上限（秒）")
    parser.add_argument("--write", action="store_true", help=f"把结果追加到 {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    try:
        passes = [int(x) for x in args.busy.split(",")]
    except ValueError:
        parser.error(f"--busy 应为逗号分隔的整数，实际为 {args.busy!r}")
    if any(n < 0 for n in passes) or args.threads < 0 or args.timeout < 1:
        parser.error("--busy 与 --threads 不能为负，--timeout 至少为 1")
    every = book_order()
    if args.notebooks:
        by_name = {p.stem: p for p in every}
        missing = [n for n in args.notebooks if n not in by_name]
        if missing:
            parser.error(f"没有这些笔记本：{', '.join(missing)}；可选：{', '.join(by_name)}")
        chosen = [by_name[n] for n in args.notebooks]
        # 仍按书中顺序：共用模型由第一个用到它的笔记本训练
        notebooks = [p for p in every if p in chosen]
    else:
        notebooks = every
    machine = machine_info()
    commit = git_head(ROOT)
    start_load = os.getloadavg()[0]
    results = {n: one_pass(notebooks, n, args.threads, args.timeout) for n in passes}
    base = passes[0]
    head = "| 笔记本 | " + " | ".join(f"忙进程 {n}" for n in passes) + \
        "".join(f" | 忙 {n} / 忙 {base}" for n in passes[1:]) + " |"
    rule = "|---|" + "---:|" * (2 * len(passes) - 1)
    rows = []
    for nb in notebooks:
        cells = []
        for n in passes:
            wall, ok = results[n][nb.stem]
            cells.append(f"{wall:.0f} s" + ("" if ok else "（失败）"))
        cells += [f"{results[n][nb.stem][0] / results[base][nb.stem][0]:.2f}×" for n in passes[1:]]
        rows.append(f"| {nb.stem} | " + " | ".join(cells) + " |")
    totals = [sum(w for w, _ in results[n].values()) for n in passes]
    rows.append("| **合计** | " + " | ".join(f"**{t:.0f} s**" for t in totals) +
                "".join(f" | {t / totals[0]:.2f}×" for t in totals[1:]) + " |")
    over = [nb.stem for nb in notebooks if results[base][nb.stem][0] > GOAL_S]
    threads = f"{args.threads} 个线程" if args.threads else "线程数由 setup_notebook 决定"
    block = (f"\n### {dt.date.today()}，提交 `{commit}`，{threads}\n\n"
             f"- 机器：{describe_cpu(machine)}；测量开始时 1 分钟平均负载 {start_load:.1f}；{machine['omp_wait']}\n"
             f"- 超过 {GOAL_S:.0f} s 目标的（忙进程 {base}）：{', '.join(over) or '无'}\n\n"
             + "\n".join([head, rule, *rows]) + "\n")
    print(block)
    if args.write:
        if not RESULTS.exists():
            RESULTS.write_text("# 笔记本单独运行的用时（2 线程，空闲与繁忙）\n\n"
                               "命令：`python benchmarks/notebook_timing.py`。每一遍用新的空模型缓存，按书中顺序运行。\n",
                               encoding="utf-8")
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(block)
    failed = any(not ok for r in results.values() for _, ok in r.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

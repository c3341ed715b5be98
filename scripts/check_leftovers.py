"""执行完笔记本（构建书）或单元测试之后的检查：临时目录里不许留下文件；报告每个笔记本的运行目录占多少磁盘。

用法：python scripts/check_leftovers.py 临时目录 [运行目录根]
      （单元测试之后只查临时目录：scripts/test.sh）

笔记本的输出应写进 ``clipedu.run_dir("笔记本名")``：同一个笔记本再运行一次时替换上一次的。用
``tempfile.mkdtemp()`` 之类写在临时目录里的文件没有人删，每运行一次书就多占一份（曾经每次约 200 MB）。
构建时把笔记本的 TMPDIR 指向一个空目录，执行完它里面不许有文件（空目录不算）；否则列出留下的东西并以状态 1 退出。
"""
from __future__ import annotations

import sys
from pathlib import Path

FIXED_NAMES = {".ses"}


def tree_size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    tmp = Path(argv[0])
    runs = Path(argv[1]) if len(argv) == 2 else None
    rc = 0
    # 只算装着文件的：pytest、torch 会顺手建一些空的缓存目录（pytest-of-USER、torchinductor_USER），它们不占磁盘。
    # 名字固定的工具文件每次覆盖同一个，不会越积越多，也不算：onnxruntime 一导入就写 $TMPDIR/.ses（51 字节）
    left = sorted(p for p in tmp.iterdir() if p.name not in FIXED_NAMES
                  and (not p.is_dir() or any(q.is_file() for q in p.rglob("*")))) if tmp.is_dir() else []
    if left:
        rc = 1
        print(f"[check_leftovers] 临时目录 {tmp} 里留下了 {len(left)} 项（每运行一次就多占一份磁盘）：",
              file=sys.stderr)
        for p in left[:20]:
            print(f"  {p.name}  {mb(tree_size(p))}", file=sys.stderr)
        print("  请把输出写进 clipedu.run_dir(\"笔记本名\")，或用 with tempfile.TemporaryDirectory() 及时删掉",
              file=sys.stderr)
    if runs is None:
        print(f"[check_leftovers] 临时目录{'干净' if not left else '有残留'}")
        return rc
    total = 0
    for base in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        dirs = [d for d in base.iterdir() if d.is_dir()]
        size = tree_size(base)
        total += size
        print(f"[check_leftovers] {base.name}: {len(dirs)} 个运行目录，{mb(size)}")
        if len(dirs) != 1:
            rc = 1
            print(f"[check_leftovers] {base} 里应恰好有 1 个运行目录（一个笔记本执行一次），实际 {len(dirs)} 个",
                  file=sys.stderr)
    print(f"[check_leftovers] 运行目录合计 {mb(total)}；临时目录{'干净' if not left else '有残留'}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env bash
# 刷新 constraints.txt：把 .venv 里现在装着的每个包的确切版本写下来（CI 用它测过的版本）。
#   bash scripts/lock_deps.sh
# requirements.txt 仍写范围（给用户）；setup.sh 与 CI 默认按 constraints.txt 安装，
# 所以“续训逐位相同”和吞吐数字对应的是同一组版本。升级依赖：改 requirements.txt 或删掉
# constraints.txt 里对应的行，NO_CONSTRAINTS=1 bash scripts/setup.sh，跑通测试后再运行本脚本。
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# 由 scripts/lock_deps.sh 生成：CI 测过的确切版本（pip install -r requirements.txt -c constraints.txt）。"
    echo "# 不要手改；刷新：bash scripts/lock_deps.sh"
    .venv/bin/python -m pip list --format=freeze --exclude-editable --disable-pip-version-check \
        | grep -v -i -E '^(pip|setuptools|wheel|clipedu)=='
} > constraints.txt
echo "[lock] 写入 constraints.txt（$(grep -c '==' constraints.txt) 个包）"

#!/usr/bin/env bash
# README 命令 2（也是 .ci/run 运行的内容）：安装一切，然后运行全部测试。
#   1. WITH_BROWSER=1 WITH_TEX=1 scripts/setup.sh（Python 依赖、npm 前端依赖；root + Debian 时 apt 安装 chromium、
#      中文字体和 PDF 版要的 XeLaTeX/ctex/latexmk/poppler-utils）
#   2. 单元测试：pytest tests/ --ignore=tests/browser --ignore=tests/pdf -n 2（两个进程并行）；跑完临时目录里不许留下文件
#   3. 构建书：scripts/build_book.sh（其中 nbmake 把每个笔记本恰好执行一次，再 -W -n 严格构建）
#   4–5. 学生版网页、PDF 版与学生版 PDF（三个同时构建）：EDITION=student / pdf / student-pdf REUSE_EXECUTED=1，
#      复用第 3 步执行过的笔记本；学生版删掉解答，PDF 用 XeLaTeX 排版并检查日志
#   6. 离线包：scripts/make_offline.py（网页、笔记本、两本 PDF、clipedu 的 wheel、离线使用说明）
#   7. PDF 测试：pytest tests/pdf（文字、字体、样页截图在 _build/screenshots/pdf/）
#   8. 浏览器测试：pytest tests/browser（Chromium 打开每一章，截图在 _build/screenshots/；学生版里没有解答；
#      离线包从 file:// 打开时搜索、公式、流程图都能用）
# 任何一步失败都让脚本以非零状态退出；pytest 的退出码 5（没有收集到测试）也算失败。
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$ROOT/.venv/bin:$PATH"
T0=$SECONDS
TIMINGS=()

step() {  # step 名称 命令...：计时运行一步，失败时打印汇总后退出
    local name=$1; shift
    local t=$SECONDS rc=0
    printf '\n==================== %s ====================\n' "$name"
    "$@" || rc=$?
    TIMINGS+=("$(printf '%-28s %5ds  %s' "$name" $((SECONDS - t)) "$([[ $rc == 0 ]] && echo ok || echo "失败 (退出码 $rc)")")")
    if [[ $rc != 0 ]]; then
        summary
        exit "$rc"
    fi
}

summary() {
    printf '\n==================== 用时汇总 ====================\n'
    printf '%s\n' "${TIMINGS[@]}"
    printf '%-28s %5ds\n' "合计" $((SECONDS - T0))
}

# pytest 的退出码 5 表示“没有收集到任何测试”：对我们来说这是错误（测试丢了），不是成功
run_pytest() {
    local rc=0
    python -m pytest "$@" || rc=$?
    if [[ $rc == 5 ]]; then
        echo "[test] pytest 没有收集到任何测试：$*" >&2
    fi
    return "$rc"
}

step "安装 (setup.sh)" env WITH_BROWSER=1 WITH_TEX=1 bash scripts/setup.sh
# 两个进程并行、各用 1 个线程（pytest-xdist）：测试里多是小模型，2 核上比一个进程开两个线程快
# 临时目录换成一个新建的空目录（路径要短：Unix 套接字的路径不能超过 107 字节），跑完检查测试在那里没留下文件
# （tmp_path 只为失败的测试保留，见 pyproject.toml）；失败时留着它供排查
unit_tests() {
    local tmp rc=0
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/clipedu_unit.XXXXXX")
    TMPDIR=$tmp OMP_NUM_THREADS=1 run_pytest tests/ --ignore=tests/browser --ignore=tests/pdf -q -p no:cacheprovider \
        --durations=15 -n 2 --dist worksteal || rc=$?
    if [[ $rc == 0 ]]; then python scripts/check_leftovers.py "$tmp" || rc=$?; fi
    if [[ $rc == 0 ]]; then rm -rf "$tmp"; else echo "[test] 测试的临时目录留在 $tmp" >&2; fi
    return "$rc"
}
step "单元测试" unit_tests
# 离线包在两本 PDF 都构建完之后打一次（第 6 步），这里不让构建脚本顺手各打一次
step "构建书 (含 nbmake)" env SKIP_SETUP=1 SKIP_OFFLINE=1 bash scripts/build_book.sh
# 学生版网页、PDF 版、学生版 PDF 都只读第 3 步执行好的 _stage/，各有自己的副本与输出目录，互不相干；
# Sphinx 与 XeLaTeX 基本是单线程的，所以三个同时构建（2 核上约省一半时间），日志分开写，最后逐个报告
other_editions() {
    local editions=(student pdf student-pdf) pids=() rc=0 i
    mkdir -p _build/logs
    for e in "${editions[@]}"; do
        env SKIP_SETUP=1 SKIP_OFFLINE=1 EDITION="$e" REUSE_EXECUTED=1 bash scripts/build_book.sh \
            > "_build/logs/build_$e.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        local e=${editions[$i]}
        if wait "${pids[$i]}"; then
            echo "[test] $e：$(tail -n 1 "_build/logs/build_$e.log")"
        else
            rc=1
            echo "[test] $e 构建失败；完整日志 _build/logs/build_$e.log 的最后 60 行：" >&2
            tail -n 60 "_build/logs/build_$e.log" >&2
        fi
    done
    return "$rc"
}
step "学生版、PDF 版、学生版 PDF（并行，复用笔记本）" other_editions
step "离线包" python scripts/make_offline.py
step "PDF 测试" run_pytest tests/pdf -q -p no:cacheprovider
# 浏览器测试也用两个进程（各开一个 Chromium）
step "浏览器测试" run_pytest tests/browser -q -p no:cacheprovider -n 2 --dist worksteal
summary

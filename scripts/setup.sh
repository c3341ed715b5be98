#!/usr/bin/env bash
# 安装构建和测试所需的一切（可重复运行；已装好的步骤会很快跳过）。
#   bash scripts/setup.sh                 # Python 虚拟环境 + npm 前端依赖 + 复制到 book/_vendor/
#   WITH_BROWSER=1 bash scripts/setup.sh  # 另外（root + Debian）用 apt 安装 chromium 和 fonts-noto-cjk
#   WITH_TEX=1 bash scripts/setup.sh      # 另外用 apt 安装 PDF 版要的 XeLaTeX、ctex、latexmk、poppler-utils（见第 2 步）
#   PYTHON=python3.12 bash scripts/setup.sh  # 指定解释器；默认取 PATH 上第一个 ≥ 3.10 的 python3.x
#   NO_CONSTRAINTS=1 bash scripts/setup.sh   # 只按 requirements.txt 的范围装（不用 constraints.txt 锁定的版本）
# Python 依赖默认按 constraints.txt（CI 测过的确切版本）安装；刷新它：bash scripts/lock_deps.sh
# 什么都不手工装：MathJax 3 和 mermaid 来自 package-lock.json 锁定的 npm 包，
# 复制进 book/_vendor/（不叫 _static，因为 Jupyter Book 1 会把 _static 里的每个 .js 注入每一页）。
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$ROOT/.venv
log() { printf '[setup] %s\n' "$*"; }

py_ok() {  # 解释器存在且版本 ≥ 3.10
    command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}
PY=${PYTHON:-}
if [[ -z $PY ]]; then
    for cand in python3 python3.13 python3.12 python3.11 python3.10; do
        if py_ok "$cand"; then PY=$cand; break; fi
    done
fi
if [[ -z $PY ]] || ! py_ok "$PY"; then
    echo "[setup] 需要 Python ≥ 3.10，但没有找到（${PY:-PATH 上的 python3*}）；请安装后用 PYTHON=... 指定" >&2
    exit 1
fi

# ---- 1. Python 虚拟环境与依赖 -------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    log "创建虚拟环境 $VENV（$PY）"
    "$PY" -m venv "$VENV"
fi
PIP_ARGS=(-r requirements.txt)
HASHED=(requirements.txt pyproject.toml)
if [[ ${NO_CONSTRAINTS:-0} != 1 && -f constraints.txt ]]; then
    PIP_ARGS+=(-c constraints.txt)
    HASHED+=(constraints.txt)
fi
req_hash=$(cat "${HASHED[@]}" | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]]; then
    log "pip install ${PIP_ARGS[*]}"
    "$VENV/bin/python" -m pip install --quiet "${PIP_ARGS[@]}"
    echo "$req_hash" > "$VENV/.requirements.sha256"
else
    log "Python 依赖已是最新（${HASHED[*]} 未变），跳过 pip"
fi

# ---- 1b. cn_clip（Chinese-CLIP，测试依赖）：单独一块，--no-deps -------------------------
# tests/test_cnclip_*.py 拿 clipedu 的 BERT 分词器与模型和它逐位对比；BertChineseTokenizer 默认也读它附带的 vocab.txt。
# cn_clip 钉死 lmdb==1.3.0（只在它自己的训练脚本里用），Python 3.11 上编译失败，所以不装依赖；
# 它真正导入的 torch、torchvision、numpy、six 都在 requirements.txt 里。
if ! "$VENV/bin/python" -m pip show --quiet cn_clip >/dev/null 2>&1; then
    log "pip install --no-deps cn_clip"
    "$VENV/bin/python" -m pip install --quiet --no-deps "cn_clip>=1.5,<2"
else
    log "cn_clip 已安装"
fi

# ---- 2. 浏览器、系统中文字体与 TeX（仅在要求时；root + apt） -------------------------
# WITH_BROWSER=1：chromium 与 fonts-noto-cjk（浏览器测试；PDF 版也用 chromium 预先画 mermaid 图）
# WITH_TEX=1：另加 PDF 版（EDITION=pdf）的 XeLaTeX 与 ctex。只装用得到的：
#   texlive-xetex（XeLaTeX）、texlive-lang-chinese（ctex、xeCJK）、texlive-latex-extra（Sphinx 要的 titlesec、
#   tabulary、capt-of、needspace、fncychap 等）、texlive-fonts-recommended（hyperref 在 XeTeX 下要的 pzdr）、
#   latexmk、poppler-utils（测试用的 pdftotext/pdffonts/pdftoppm）、fonts-dejavu-core（思源字体里没有的 ✔ ᾱ 等）、
#   make（jupyter-book --builder pdflatex 在 _build/latex 里运行 make all-pdf）。
#   不装 texlive-full、texlive-fonts-extra、xindy（书不生成索引）。36 个包，下载约 170 MB、安装后约 490 MB（README 有实测用时）。
APT_WANT=()
if [[ ${WITH_BROWSER:-0} == 1 || ${WITH_TEX:-0} == 1 ]]; then
    APT_WANT+=(chromium fonts-noto-cjk)
fi
if [[ ${WITH_TEX:-0} == 1 ]]; then
    APT_WANT+=(texlive-xetex texlive-lang-chinese texlive-latex-extra texlive-fonts-recommended latexmk
               poppler-utils fonts-dejavu-core make)
fi
if (( ${#APT_WANT[@]} )); then
    # 一次 dpkg-query 查全部（已装好时这一步只要几十毫秒）
    installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${APT_WANT[@]}" 2>/dev/null | awk '$1 == "ii" {print $2}')
    missing=()
    for pkg in "${APT_WANT[@]}"; do
        grep -qx "$pkg" <<< "$installed" || missing+=("$pkg")
    done
    if (( ${#missing[@]} )); then
        if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
            echo "[setup] 需要 ${missing[*]}，但当前不是 root 或没有 apt-get；请手动安装后重试" >&2
            exit 1
        fi
        log "apt-get install ${missing[*]}"
        t_apt=$SECONDS
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        log "apt-get 用时 $((SECONDS - t_apt))s"
    else
        log "${APT_WANT[*]} 已安装"
    fi
fi

# ---- 3. 前端依赖：npm ci（按锁文件）并复制到 book/_vendor/ -----------------------------
if ! command -v npm >/dev/null; then
    echo "[setup] 找不到 npm：构建离线的书需要 Node.js 和 npm（Debian: apt-get install nodejs npm）" >&2
    exit 1
fi
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ "$(cat node_modules/.lock.sha256 2>/dev/null)" != "$lock_hash" ]]; then
    log "npm ci（MathJax 3、mermaid）"
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$lock_hash" > node_modules/.lock.sha256
else
    log "node_modules 与 package-lock.json 一致，跳过 npm ci"
fi
VENDOR=book/_vendor
if [[ "$(cat $VENDOR/.lock.sha256 2>/dev/null)" != "$lock_hash" ]]; then
    log "复制 MathJax 与 mermaid 到 $VENDOR/"
    rm -rf "$VENDOR"
    mkdir -p "$VENDOR/mermaid/chunks"
    # MathJax：整个 es5 目录（组件、TeX 扩展、字体、SRE 语音规则），页面只引用 tex-chtml-full.js
    cp -r node_modules/mathjax/es5 "$VENDOR/mathjax"
    # mermaid：ESM 入口加它按需 import 的 chunk；不带 .map
    cp node_modules/mermaid/dist/mermaid.esm.min.mjs "$VENDOR/mermaid/"
    mkdir -p "$VENDOR/mermaid/chunks/mermaid.esm.min"
    cp node_modules/mermaid/dist/chunks/mermaid.esm.min/*.mjs "$VENDOR/mermaid/chunks/mermaid.esm.min/"
    cp node_modules/mathjax/LICENSE "$VENDOR/mathjax/LICENSE"
    cp node_modules/mermaid/LICENSE "$VENDOR/mermaid/LICENSE"
    echo "$lock_hash" > "$VENDOR/.lock.sha256"
else
    log "$VENDOR/ 已是最新"
fi
log "完成"

#!/usr/bin/env bash
# README 命令 1：安装依赖，然后把每个笔记本恰好执行一次，再严格构建整本书。
#   bash scripts/build_book.sh          # 结果在 _build/html/index.html
# 只预览文字排版时可用 SKIP_NOTEBOOKS=1 跳过第 3 步（笔记本页面将没有输出）。
# 其他版本（EDITION=…；见教学指南“书的几种版本”一节）：
#   EDITION=student     → _build/student/html/index.html  学生版网页：没有任何解答，练习与编号不变
#   EDITION=pdf         → _build/pdf/book.pdf             PDF 版：XeLaTeX + ctex + Noto CJK，解答紧跟练习
#   EDITION=student-pdf → _build/student/pdf/book.pdf     学生版 PDF
# 学生版与 PDF 版不再执行笔记本：直接用完整版刚执行过的 _stage/（先逐单元核对它与仓库里的源文件相同）。
# _stage/ 不存在或已过时时，REUSE_EXECUTED=auto（PDF 版的默认）会先执行一遍；REUSE_EXECUTED=1 则直接报错。
# 步骤：
#   1. scripts/setup.sh（可用 SKIP_SETUP=1 跳过，test.sh 已经跑过时用；PDF 版加 WITH_TEX=1 装 TeX）
#   2. 把 _config.yml、_toc.yml、book/、notebooks/ 复制到副本（clipedu/、benchmarks/、scripts/ 以符号链接给 literalinclude/include 用）
#   3. 在副本上 pytest --nbmake --overwrite：每个笔记本在自己的目录里执行一次，输出写回副本，仓库里的笔记本保持无输出
#   4. 运行 book/figures/make_*.py（在副本里，图写进副本的 book/figures/generated/）
#   5. 学生版：book/_ext/student_edition.py 从副本里删掉全部解答（Markdown 的 {solution} 块、带 solution 标签的笔记本单元）
#   6. jupyter-book build（_config.yml 里 execute_notebooks: "off"）加 -W -n --keep-going：任何警告、断链都让构建失败；
#      PDF 版用 --builder pdflatex（latexmk + XeLaTeX），再由 scripts/check_latex_log.py 检查缺字、溢出版心的行
#   7. 完整版与 PDF 版构建完后重写离线包 _build/clipedu-book-offline.zip（scripts/make_offline.py：
#      网页、无输出的笔记本、已构建的 PDF、clipedu 的 wheel、离线使用说明）
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$ROOT/.venv/bin:$PATH"
# 笔记本的默认设置按 2 核准备；每个 notebook 自己用 setup_notebook() 设线程数
# 不设 MPLBACKEND：内核要用 matplotlib 的 inline 后端，图才会写进笔记本输出
export PYTHONHASHSEED=0 PYDEVD_DISABLE_FILE_VALIDATION=1
NB_TIMEOUT=${NB_TIMEOUT:-1800}  # 每个单元格的上限（秒，nbmake 按单元格计），只是防挂死的安全上限：最慢的单元格
                                # （02_diffusion 训练 UNet）空闲时单线程约 150 秒，负载 8 时约 4 倍
NB_WORKERS=${NB_WORKERS:-2}     # 同时执行几个笔记本（1 = 依次执行，每个用 2 个线程）
EDITION=${EDITION:-full}
case $EDITION in
    full)        STAGE=$ROOT/_stage;             OUT=$ROOT/_build/html ;;   # 副本不能放在 _build/ 下：nbmake 会跳过路径中含 _build 的笔记本
    student)     STAGE=$ROOT/_stage_student;     OUT=$ROOT/_build/student/html ;;
    pdf)         STAGE=$ROOT/_stage_pdf;         OUT=$ROOT/_build/pdf ;;
    student-pdf) STAGE=$ROOT/_stage_student_pdf; OUT=$ROOT/_build/student/pdf ;;
    *) echo "[build_book] EDITION 只能是 full、student、pdf 或 student-pdf，实际为 '$EDITION'" >&2; exit 2 ;;
esac
case $EDITION in pdf|student-pdf) FORMAT=pdf ;; *) FORMAT=html ;; esac
case $EDITION in student|student-pdf) STUDENT=1 ;; *) STUDENT=0 ;; esac
# 学生版默认照旧（0：自己执行笔记本）；PDF 版默认 auto：_stage/ 新鲜就复用，否则执行
if [[ $FORMAT == pdf ]]; then REUSE_EXECUTED=${REUSE_EXECUTED:-auto}; else REUSE_EXECUTED=${REUSE_EXECUTED:-0}; fi
if [[ $REUSE_EXECUTED != 0 && $EDITION == full ]]; then
    echo "[build_book] REUSE_EXECUTED 只用于学生版与 PDF 版（EDITION=student、pdf、student-pdf）" >&2; exit 2
fi
log() { printf '\n[build_book] %s\n' "$*"; }
t0=$SECONDS

if [[ ${SKIP_SETUP:-0} != 1 ]]; then
    if [[ $FORMAT == pdf ]]; then WITH_TEX=1 bash scripts/setup.sh; else bash scripts/setup.sh; fi
fi
[[ -f book/_vendor/mathjax/tex-chtml-full.js ]] || { echo "[build_book] 缺少 book/_vendor/（请先运行 scripts/setup.sh）" >&2; exit 1; }

log "准备副本 $STAGE"
rm -rf "$STAGE"
mkdir -p "$STAGE"
# 笔记本共用的模型缓存（clipedu.model_cache）：同一配置与种子在一次构建里只训练一次；
# 放在副本里，每次构建都从零训练，不会用到旧代码训练出的模型
export CLIPEDU_CACHE="$STAGE/model_cache"
cp _config.yml _toc.yml "$STAGE/"
cp -r book "$STAGE/"
mkdir -p "$STAGE/notebooks"
if [[ -d notebooks ]]; then cp -r notebooks/. "$STAGE/notebooks/"; fi
rm -rf "$STAGE/book/figures/generated"
find "$STAGE" -name .ipynb_checkpoints -prune -exec rm -rf {} +
ln -s "$ROOT/clipedu" "$STAGE/clipedu"
ln -s "$ROOT/benchmarks" "$STAGE/benchmarks"   # 「性能与基准」一页 include 的结果文件
ln -s "$ROOT/scripts" "$STAGE/scripts"         # 第 5 章 literalinclude 的 SLURM 示例
printf "[pytest]\n" > "$STAGE/pytest.ini"   # 挡住仓库 pyproject.toml 里的 pytest 配置

shopt -s nullglob
notebooks=("$STAGE"/notebooks/*.ipynb)
figure_scripts=("$STAGE"/book/figures/make_*.py)
shopt -u nullglob

t_nb=$SECONDS
if [[ $REUSE_EXECUTED == auto ]]; then
    if [[ ${SKIP_NOTEBOOKS:-0} != 1 ]] && python book/_ext/student_edition.py "$ROOT/_stage" --fresh-from "$ROOT" --check-only 2>/dev/null; then
        REUSE_EXECUTED=1
    else
        REUSE_EXECUTED=0
    fi
fi
if [[ $REUSE_EXECUTED == 1 ]]; then
    # 直接用完整版刚执行过的笔记本与插图；先核对它们与仓库里的源文件逐单元相同
    log "$EDITION：复用 $ROOT/_stage 里已执行的笔记本（不再执行）"
    python book/_ext/student_edition.py "$ROOT/_stage" --fresh-from "$ROOT" --check-only
    cp "$ROOT"/_stage/notebooks/*.ipynb "$STAGE/notebooks/"
    if [[ -d $ROOT/_stage/book/figures/generated ]]; then
        cp -r "$ROOT/_stage/book/figures/generated" "$STAGE/book/figures/"
        figure_scripts=()
    fi
elif [[ ${SKIP_NOTEBOOKS:-0} == 1 ]]; then
    # 只供写文字的作者快速预览排版；笔记本页面将没有输出。scripts/test.sh 与 CI 从不设置它。
    log "SKIP_NOTEBOOKS=1：不执行笔记本（仅供本地预览）"
elif (( ${#notebooks[@]} )); then
    log "执行 ${#notebooks[@]} 个笔记本（nbmake，每个一次，超时 ${NB_TIMEOUT}s，${NB_WORKERS} 个进程并行）"
    # -p no:cacheprovider：不在副本里留 .pytest_cache；--rootdir：不读仓库的 pytest 配置
    # 并行时每个内核只用 1 个线程（setup_notebook 读 OMP_NUM_THREADS）：小模型在 2 核上，两个单线程进程
    # 比一个双线程进程快得多；共用的模型由 model_cache 的锁保证只训练一次。worksteal：先做完的进程去拿别人的活。
    xdist=()
    if (( NB_WORKERS > 1 )); then
        xdist=(-n "$NB_WORKERS" --dist worksteal)
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    fi
    # 笔记本的输出目录（clipedu.run_dir）放在 _build/notebook_runs、每次构建清空：构建之间互不干扰。
    # 临时目录换成一个新建的空目录（路径要短：Unix 套接字的路径不能超过 107 字节）。执行完它里面必须没有文件：
    # 笔记本用 tempfile.mkdtemp 之类留下文件，每运行一次就多占一份磁盘，这里直接报错
    runs=$ROOT/_build/notebook_runs
    rm -rf "$runs" && mkdir -p "$runs"
    nb_tmp=$(mktemp -d "${TMPDIR:-/tmp}/clipedu_nb.XXXXXX")
    (cd "$STAGE" && CLIPEDU_RUNS="$runs" TMPDIR="$nb_tmp" \
        python -m pytest --nbmake --overwrite --nbmake-timeout="$NB_TIMEOUT" "${xdist[@]}" \
        -p no:cacheprovider --rootdir="$STAGE" -q --durations=0 notebooks)
    python scripts/check_leftovers.py "$nb_tmp" "$runs"
    rm -rf "$nb_tmp"
    python scripts/check_notebook_outputs.py --extract "$ROOT/_build/screenshots/figures" "${notebooks[@]}"
else
    log "notebooks/ 里还没有笔记本，跳过执行"
fi
t_nb=$((SECONDS - t_nb))

if (( ${#figure_scripts[@]} )); then
    log "生成插图：${figure_scripts[*]##*/}"
    for script in "${figure_scripts[@]}"; do
        (cd "$(dirname "$script")" && python "$(basename "$script")")
    done
fi

if [[ $STUDENT == 1 ]]; then
    log "学生版：删掉全部解答"
    python book/_ext/student_edition.py "$STAGE"
    # 扩展 zh_exercise 据此再检查每页的文档树里没有解答节点
    python - "$STAGE/_config.yml" <<'PY'
import sys, yaml
path = sys.argv[1]
cfg = yaml.safe_load(open(path, encoding="utf-8"))
cfg["sphinx"]["config"]["zh_student_edition"] = True
cfg["title"] = cfg["title"] + "（学生版）"
yaml.safe_dump(cfg, open(path, "w", encoding="utf-8"), allow_unicode=True, sort_keys=False)
PY
fi

log "jupyter-book build（$EDITION，-W -n --keep-going，execute_notebooks: off）"
t_jb=$SECONDS
if [[ $EDITION == full ]]; then
    rm -rf _build/html _build/.doctrees _build/jupyter_execute
    jupyter-book build "$STAGE" --path-output "$ROOT" -W -n --keep-going
elif [[ $FORMAT == html ]]; then
    # 在副本里构建，再把 HTML 移到 _build/student/html，与完整版互不覆盖
    rm -rf "$STAGE/_build" "$OUT"
    jupyter-book build "$STAGE" --path-output "$STAGE" -W -n --keep-going
    mkdir -p "$(dirname "$OUT")"
    mv "$STAGE/_build/html" "$OUT"
else
    # Sphinx 写出 book.tex，jupyter-book 再在 _build/latex 里运行 make all-pdf（latexmk，XeLaTeX）；
    # -halt-on-error：任何 LaTeX 错误都让构建失败，而不是带着错误排完
    rm -rf "$STAGE/_build" "$OUT"
    LATEXMKOPTS="-halt-on-error -interaction=nonstopmode -file-line-error" \
        jupyter-book build "$STAGE" --builder pdflatex --path-output "$STAGE" -W -n --keep-going
    LATEX_DIR=$STAGE/_build/latex
    [[ -f $LATEX_DIR/book.pdf ]] || { echo "[build_book] 没有生成 book.pdf（见 $LATEX_DIR/book.log）" >&2; exit 1; }
    python scripts/check_latex_log.py "$LATEX_DIR/book.log"
    mkdir -p "$OUT"
    cp "$LATEX_DIR/book.pdf" "$LATEX_DIR/book.log" "$OUT/"
fi
t_jb=$((SECONDS - t_jb))
if [[ $FORMAT == html ]]; then
    [[ -f $OUT/index.html ]] || { echo "[build_book] 没有生成 $OUT/index.html" >&2; exit 1; }
    result=${OUT#"$ROOT"/}/index.html
else
    result=${OUT#"$ROOT"/}/book.pdf
fi
if [[ $EDITION == full || $EDITION == pdf ]] && [[ ${SKIP_OFFLINE:-0} != 1 ]]; then
    log "离线包：_build/clipedu-book-offline.zip"
    python scripts/make_offline.py
fi
log "完成：$result（笔记本 ${t_nb}s，jupyter-book ${t_jb}s，共 $((SECONDS - t0))s）"

#!/usr/bin/env bash
# 在一块 CUDA GPU 上检查 clipedu 的 GPU 路径并记录真实吞吐（一次跑完，约 6–8 分钟）。
#
#   OUT=results_dir bash benchmarks/gpu_check.sh
#
# 检查：bf16 autocast 与 fp32 特征一致、SDPA 走 flash/高效核、tiny-cpu 在 GPU 上用 amp_bf16 训练并评估、
# 各精度（含 amp_fp16 + GradScaler）、累积 + 重算、torch.compile、channels_last、torchrun + NCCL（单卡 1 进程）、
# 中断后 --resume 续训，
# 以及 vit-b-32 bf16 batch 256 与 open_clip 的吞吐对比（pairs/s、MFU、峰值显存）。
# 每一步的输出都写到 $OUT/gpu_check.log，结果 JSON 写到 $OUT/。
set -uo pipefail
OUT=${OUT:-_build/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
LOG="$OUT/gpu_check.log"
RUNS=$(mktemp -d)
fail=0

step() {  # step 名称 命令...
    local name=$1; shift
    local t0=$SECONDS
    echo "===== $name =====" | tee -a "$LOG"
    if "$@" >>"$LOG" 2>&1; then
        echo "[ok]   $name ($((SECONDS - t0)) s)" | tee -a "$LOG"
    else
        echo "[FAIL] $name ($((SECONDS - t0)) s)" | tee -a "$LOG"; fail=1
    fi
}

{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } 2>&1 | tee -a "$LOG"

step "CUDA 数值检查（bf16 autocast、SDPA 核、fused AdamW）" $PY benchmarks/gpu_numerics.py --json "$OUT/numerics.json"

step "tiny-cpu 在 GPU 上训练（amp_bf16，800 步，batch 256）" \
    $PY -m clipedu train --preset tiny-cpu --device cuda --precision amp_bf16 --steps 800 --batch-size 256 \
        --lr 2e-3 --out "$RUNS/bf16" --no-progress
cp "$RUNS/bf16/metrics.json" "$OUT/tiny_bf16_metrics.json" 2>/dev/null

step "训练引擎各精度/累积/重算/编译/channels_last（scripts/gpu_train_check.py）" \
    $PY scripts/gpu_train_check.py --out "$RUNS/engine" --steps 60

step "torchrun + NCCL（1 进程）" \
    $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m clipedu train --preset tiny-cpu \
        --device cuda --precision amp_bf16 --steps 40 --batch-size 128 --out "$RUNS/ddp" --no-progress --eval-size 0

step "续训：先训到 40 步（第 20 步存档），再从 latest 续到 80 步（第 60 步存档并轮换）" bash -c "
    $PY -m clipedu train --preset tiny-cpu --device cuda --steps 40 --batch-size 128 --save-every 20 \
        --keep-last 1 --out $RUNS/resume --no-progress --eval-size 0 &&
    $PY -m clipedu train --preset tiny-cpu --device cuda --steps 80 --batch-size 128 --save-every 20 \
        --keep-last 1 --out $RUNS/resume --no-progress --eval-size 0 --resume latest &&
    $PY -c \"
import json, os, torch
rows = [json.loads(l) for l in open('$RUNS/resume/log.jsonl')]
files = sorted(f for f in os.listdir('$RUNS/resume') if f.endswith('.pt'))
step = torch.load('$RUNS/resume/last.pt', weights_only=True)['train_state']['step']
print('logged steps', rows[0]['step'], '..', rows[-1]['step'], 'files', files, 'last.pt step', step)
assert [r['step'] for r in rows] == list(range(1, 81)), 'log.jsonl 应连续记录 1..80 步'
assert files == ['ckpt_step60.pt', 'last.pt'] and step == 80, '第 60 步的存档应保留、第 20 步的被轮换掉'
\""

step "吞吐：vit-b-32 bf16 batch 256 对 open_clip" \
    $PY benchmarks/train_throughput.py --preset vit-b-32 --batch-size 256 --precision bf16 --device cuda \
        --steps 10 --rounds 3 --json "$OUT/throughput_vitb32_bf16.json"

step "吞吐：vit-b-32 bf16 batch 256 + torch.compile" \
    $PY benchmarks/train_throughput.py --preset vit-b-32 --batch-size 256 --precision bf16 --device cuda \
        --steps 10 --rounds 2 --compile --json "$OUT/throughput_vitb32_bf16_compile.json"

step "吞吐：rn50 bf16 batch 256 对 open_clip" \
    $PY benchmarks/train_throughput.py --preset rn50 --batch-size 256 --precision bf16 --device cuda \
        --steps 10 --rounds 2 --json "$OUT/throughput_rn50_bf16.json"

rm -rf "$RUNS"
echo "gpu_check 完成，失败=$fail" | tee -a "$LOG"
exit $fail

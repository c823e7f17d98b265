#!/usr/bin/env bash
# GPU figures in one go (docs/benchmarks.md, "GPU"): bench_train.py for clip-vit-b16 and biomedclip (random
# weights, bf16 autocast), one real few-shot run end to end per backbone (BUSI, K=16, seed 1, the configs'
# iteration count), then PACK runs at once on the same GPU (what `benchmark --executor ray --gpus-per-run
# 1/PACK` does). One JSON object per measurement goes to $OUT/results.jsonl, stderr to $OUT/log.txt.
# Meant for a bare GPU machine reached through a copy of this tree: wheels it lacks in $GPU_DIR/whl, the
# data in $GPU_DIR/data/biomedical/BUSI.
#   OUT=/tmp/gpu GPU_DIR=.gpu bash benchmarks/gpu_check.sh
# Dry run on a CPU (tiny backbone, a few steps; checks the plumbing, not the figures):
#   DEVICE=cpu BACKBONES=tiny-biomedclip E2E_BACKBONES=tiny-biomedclip STEPS=2 WARMUP=1 E2E_EXTRA="--max-steps 2" \
#   PACK=2 SKIP_INSTALL=1 PY=python OUT=/tmp/gpu GPU_DIR=.gpu bash benchmarks/gpu_check.sh
set -u
CODE=$(cd "$(dirname "$0")/.." && pwd)
GPU_DIR=$(cd "${GPU_DIR:-.gpu}" && pwd)
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BACKBONES=${BACKBONES:-"clip-vit-b16 biomedclip"}
E2E_BACKBONES=${E2E_BACKBONES:-"clip-vit-b16 biomedclip"}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
E2E_EXTRA=${E2E_EXTRA:-}
PACK=${PACK:-4}
PRECISIONS=${PRECISIONS:-auto}   # e.g. "auto fp32": bench_train once per --precision (each JSON line says what ran)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.jsonl
LOG=$OUT/log.txt
if [ -z "${SKIP_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$GPU_DIR"/whl/*.whl || exit 1
  export PYTHONPATH=$CODE:/tmp/site
else
  export PYTHONPATH=$CODE
fi
export PYTHONUNBUFFERED=1 MEDCLIPSVD_CACHE=${MEDCLIPSVD_CACHE:-/tmp/medclipsvd-cache} HF_HUB_OFFLINE=1
cd "$CODE" || exit 1   # so `import medclipsvd` is this copy, whatever else is installed
{
  date -u; uname -m; echo "cores: $(nproc)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, medclipsvd; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), medclipsvd.__file__)"
} 2>&1 | tee "$OUT/env.txt"
e2e() {  # e2e BACKBONE SEED OUTDIR [extra args]: one `medclipsvd train` in process, one JSON line on stdout
  local bb=$1 seed=$2 dir=$3; shift 3
  # shellcheck disable=SC2086
  $PY "$CODE/benchmarks/bench_run.py" -- --pipeline breast_ultrasound --data-root "$GPU_DIR/data/biomedical" \
    --backbone "$bb" --random-init --shots 16 --seed "$seed" --no-mlflow --device "$DEVICE" --output "$dir" \
    $E2E_EXTRA "$@" 2>>"$LOG" | tail -1
}
for bb in $BACKBONES; do
  for prec in $PRECISIONS; do
    echo "== bench_train $bb --precision $prec" | tee -a "$LOG"
    $PY "$CODE/benchmarks/bench_train.py" --backbone "$bb" --device "$DEVICE" --precision "$prec" --steps "$STEPS" \
      --warmup "$WARMUP" --json 2>>"$LOG" | tee -a "$RES" || echo "bench_train $bb $prec FAILED"
  done
done
for bb in $E2E_BACKBONES; do
  echo "== end-to-end few-shot run ($bb, BUSI K=16 seed 1)" | tee -a "$LOG"
  e2e "$bb" 1 "/tmp/medclipsvd-e2e-$bb" | tee -a "$RES"
done
if [ "$PACK" -gt 1 ]; then
  bb=${E2E_BACKBONES##* }
  echo "== $PACK runs at once on one device ($bb, seeds 1..$PACK)" | tee -a "$LOG"
  t0=$(date +%s.%N)
  for s in $(seq 1 "$PACK"); do
    e2e "$bb" "$s" "/tmp/medclipsvd-pack-$s" --num-workers 2 > "$OUT/pack_$s.tmp" &
  done
  wait
  t1=$(date +%s.%N)
  cat "$OUT"/pack_*.tmp | sed 's/^{/{"pack": '"$PACK"', /' | tee -a "$RES"
  rm -f "$OUT"/pack_*.tmp
  $PY -c "import json; print(json.dumps({'pack': $PACK, 'backbone': '$bb', 'wall_seconds_all': round($t1 - $t0, 1)}))" | tee -a "$RES"
fi
tail -5 "$LOG"

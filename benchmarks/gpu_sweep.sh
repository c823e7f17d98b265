#!/usr/bin/env bash
# The BUSI part of the biomedical few-shot suite on one GPU (K in 1,2,4,8,16 x seeds 1,2,3 = 15 σ runs, the
# configs' iteration counts, biomedclip with random weights): once one run after another, then as 4
# `--shard i/4` processes sharing the GPU. Times go to $OUT/sweep.jsonl, logs to $OUT/sweep_log.txt.
#   OUT=/tmp/gpu GPU_DIR=.gpu bash benchmarks/gpu_sweep.sh
# CPU dry run: DEVICE=cpu BACKBONE=tiny-biomedclip SHOTS=1 SEEDS=1 EXTRA="--max-steps 1" SKIP_INSTALL=1 PY=python ...
set -u
CODE=$(cd "$(dirname "$0")/.." && pwd)
GPU_DIR=$(cd "${GPU_DIR:-.gpu}" && pwd)
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}; BACKBONE=${BACKBONE:-biomedclip}
SHOTS=${SHOTS:-1,2,4,8,16}; SEEDS=${SEEDS:-1,2,3}; EXTRA=${EXTRA:-}; SHARDS=${SHARDS:-4}
if [ -z "${SKIP_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$GPU_DIR"/whl/*.whl || exit 1
  export PYTHONPATH=$CODE:/tmp/site
else
  export PYTHONPATH=$CODE
fi
export PYTHONUNBUFFERED=1 MEDCLIPSVD_CACHE=${MEDCLIPSVD_CACHE:-/tmp/medclipsvd-cache} HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
cd "$CODE" || exit 1
LOG=$OUT/sweep_log.txt
bench() {  # bench OUTPUT [extra args]
  local o=$1; shift
  # shellcheck disable=SC2086
  $PY -m medclipsvd.cli.app benchmark --suite BUSI --protocol few_shot --shots "$SHOTS" --seeds "$SEEDS" \
    --method svd --backbone "$BACKBONE" --random-init --data-root "$GPU_DIR/data/biomedical" --output "$o" \
    --no-mlflow --device "$DEVICE" $EXTRA "$@"
}
now() { date +%s.%N; }
secs() { $PY -c "print(round($2 - $1, 1))"; }
t0=$(now); bench /tmp/sweep-seq >>"$LOG" 2>&1; rc=$?; t1=$(now)
echo "{\"mode\": \"sequential\", \"backbone\": \"$BACKBONE\", \"runs\": \"BUSI K=$SHOTS seeds=$SEEDS\", \"rc\": $rc, \"wall_seconds\": $(secs "$t0" "$t1")}" | tee -a "$OUT/sweep.jsonl"
grep -h '"seconds"' /tmp/sweep-seq/runs/few_shot/BUSI/svd/*/results.json | head -20 >> "$LOG"
t0=$(now)
for i in $(seq 0 $((SHARDS - 1))); do bench /tmp/sweep-par --shard "$i/$SHARDS" --num-workers 3 >>"$LOG" 2>&1 & done
wait; t1=$(now)
bench /tmp/sweep-par >>"$LOG" 2>&1  # aggregate (everything skipped)
echo "{\"mode\": \"$SHARDS shards at once on one device\", \"backbone\": \"$BACKBONE\", \"wall_seconds\": $(secs "$t0" "$t1")}" | tee -a "$OUT/sweep.jsonl"
cp /tmp/sweep-seq/tables/few_shot.md "$OUT/sweep_table_seq.md" 2>/dev/null
cmp -s /tmp/sweep-seq/tables/few_shot.csv /tmp/sweep-par/tables/few_shot.csv && echo "tables equal" | tee -a "$OUT/sweep.jsonl"
tail -3 "$LOG"

#!/usr/bin/env bash
# One prepared GPU run (issue 26): the decoder before and after the static cache / fused path, in ~8 minutes on
# one H100. Run from the repository root on the GPU machine:
#
#   bash benchmarks/gpu_run.sh                       # results under $OUT (default ./gpu_out)
#   BEFORE_DIR=/path/with/old/decoder bash benchmarks/gpu_run.sh
#   SMOKE=1 OMP_NUM_THREADS=1 bash benchmarks/gpu_run.sh   # the same steps on CPU, tiny shapes: checks the script only
#
# "before" = the decoder as it was before branch gpu-decoder: a directory holding that `decoder/` package
# (BEFORE_DIR), else `git archive $BEFORE_REF decoder` when this checkout has git history (BEFORE_REF default:
# 9c07bbf, the commit the branch started from), else the before pass is skipped and the eager path of this
# decoder stands in for it (its op count is the old one; its cache is already the static one).
# To carry it to a machine without git: git archive 9c07bbf decoder | tar -x -C before/  (then carry before/).
#
# Steps (each under its own timeout; each writes its result as soon as it exists):
#   1. before: benchmarks/gpu_step_time.py --quick on the old decoder (batch 1, prompt 900, window 96)   ~1 min
#   2. after, eager: the same on this decoder                                                         ~1 min
#   3. after, fused: the same with --compile (torch.compile of the blocks on CUDA: compile time included
#      in the warm-up, not in the table)                                                              ~1.5 min
#   4. benchmarks/gpu_check.py --compile --disk-load: hw, load peak (bf16 straight to the device), fwd
#      eager vs fused at batch 1 / 32, profiler kernel counts, SDPA, compaction, propose, e2e, one-block
#      torch.compile, a real load_model from disk                                                      <= 4.5 min
set -u
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
BEFORE_REF=${BEFORE_REF:-9c07bbf}
PY=${PY:-python}
STEP="--quick --prompt-len 900 --window 96"
CHECK=""
if [ -n "${SMOKE:-}" ]; then
  STEP="--quick --prompt-len 40 --window 32 --device cpu --dtype float32 --config-json decoder/bundled/tiny-arith/config.json"
  CHECK="--smoke --no-compile"
fi
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1 || true
log "device: $(tail -1 "$OUT/device.txt" 2>/dev/null)"

before=""
if [ -n "${BEFORE_DIR:-}" ] && [ -d "$BEFORE_DIR/decoder" ]; then
  before=$BEFORE_DIR
elif git rev-parse --verify -q "$BEFORE_REF^{commit}" >/dev/null 2>&1; then
  before=$(mktemp -d)
  git archive "$BEFORE_REF" decoder | tar -x -C "$before"
fi
if [ -n "$before" ]; then
  log "1. before ($before)"
  PYTHONPATH="$before:$PWD" timeout 150 $PY benchmarks/gpu_step_time.py $STEP --out "$OUT/step_before.md" \
    > "$OUT/step_before.log" 2>&1 || log "   exit $? (see step_before.log)"
else
  log "1. before: skipped (no BEFORE_DIR, no git ref $BEFORE_REF)"
fi

log "2. after, eager"
PYTHONPATH="$PWD" timeout 150 $PY benchmarks/gpu_step_time.py $STEP --out "$OUT/step_eager.md" > "$OUT/step_eager.log" 2>&1 \
  || log "   exit $? (see step_eager.log)"

log "3. after, fused (--compile)"
PYTHONPATH="$PWD" timeout 180 $PY benchmarks/gpu_step_time.py $STEP --compile --out "$OUT/step_fused.md" > "$OUT/step_fused.log" 2>&1 \
  || log "   exit $? (see step_fused.log)"

log "4. gpu_check --compile --disk-load"
timeout 290 $PY benchmarks/gpu_check.py --compile --disk-load --budget-s 200 $CHECK --out "$OUT/gpu_check" \
  > "$OUT/gpu_check.log" 2>&1 || log "   exit $? (see gpu_check.log; the JSON keeps every finished section)"

log "done"
for f in step_before step_eager step_fused; do [ -f "$OUT/$f.md" ] && cat "$OUT/$f.md"; done
tail -25 "$OUT/gpu_check.log" 2>/dev/null | cut -c1-600

#!/bin/bash
# A training SIGKILLed at a random moment and resumed, against an uninterrupted one: the same bytes?
#
# Runs stages/train.py with this project's params.yaml (train.threads set to 1) in two scratch
# folders beside data/processed (run `dvc repro dequantize` first): in one it is SIGKILLed at a
# random moment of a random epoch, then run again (it resumes from models/train_state.pt); in the
# other it runs uninterrupted. Prints the resume line and compares models/vae.pt byte for byte and
# metrics/history.csv without its two wall-clock columns. The default params take two default
# trainings' time (about 10 minutes each on one idle core).
#
#     bash benchmarks/kill_resume.sh [SCRATCH_DIR]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}; [ -x "$PY" ] || PY=python
SCRATCH=${1:-$(mktemp -d /tmp/kill-resume-XXXXXX)}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
EPOCHS=$("$PY" -c "from mnist_vae.params import load_params; print(load_params('$ROOT/params.yaml').train.epochs)")
[ "$EPOCHS" -ge 3 ] || { echo "kill_resume: train.epochs is $EPOCHS; it needs at least 3" >&2; exit 2; }
for v in ref killed; do
  rm -rf "$SCRATCH/$v"; mkdir -p "$SCRATCH/$v/models" "$SCRATCH/$v/metrics"; ln -s "$ROOT/data" "$SCRATCH/$v/data"
  sed 's/^\(  threads: \)0 /\11 /' "$ROOT/params.yaml" > "$SCRATCH/$v/params.yaml"
done
cd "$SCRATCH"
AFTER=$(( RANDOM % (EPOCHS - 2) + 1 ))
echo "$(date -u +%T) killed: SIGKILL 0-4 s after epoch $AFTER's line"
(cd killed && exec "$PY" "$ROOT/stages/train.py" > train1.log 2>&1) & pid=$!
until grep -q "^epoch *$AFTER " killed/train1.log 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { echo "kill_resume: the training ended early; see $SCRATCH/killed/train1.log" >&2; exit 1; }
  sleep 0.5
done
sleep $(( RANDOM % 5 )); kill -9 $pid; wait $pid 2>/dev/null
echo "$(date -u +%T) killed after: $(grep '^epoch' killed/train1.log | tail -1 | cut -c1-9)"
(cd killed && "$PY" "$ROOT/stages/train.py" > train2.log 2>&1) || { echo "kill_resume: the resumed training failed" >&2; exit 1; }
echo "$(date -u +%T) resumed: $(grep -m1 resuming killed/train2.log)"
(cd ref && "$PY" "$ROOT/stages/train.py" > train.log 2>&1) || { echo "kill_resume: the uninterrupted training failed" >&2; exit 1; }
echo "$(date -u +%T) uninterrupted: done"
status=0
if cmp -s ref/models/vae.pt killed/models/vae.pt; then
  echo "models/vae.pt: the same bytes (SHA-256 $(sha256sum < ref/models/vae.pt | cut -c1-16)...)"
else
  echo "models/vae.pt: DIFFERENT"; status=1
fi
"$PY" - <<'PY' || status=1
import csv, sys
rows = [list(csv.DictReader(open(f"{v}/metrics/history.csv"))) for v in ("ref", "killed")]
strip = lambda rs: [{k: v for k, v in r.items() if k not in ("epoch_time", "time")} for r in rs]
same = strip(rows[0]) == strip(rows[1])
print(f"metrics/history.csv: {len(rows[0])} and {len(rows[1])} rows; equal but for epoch_time and time: {same}")
sys.exit(0 if same else 1)
PY
exit $status

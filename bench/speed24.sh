#!/usr/bin/env bash
# Issue 24's speed results, all in one go, on a QUIET CPU (2 threads, ~22 min; nothing else running: the
# numbers are only as good as the machine is idle), offline:
#   1. forward vs ModernBERT-base (bench/throughput.py --reference modernbert): 512 / 2048 / 8192 side by side,
#      eager in fp32 and under bf16 autocast, each model's best compared; 32768 M2 alone; each model's peak RSS
#      per length in a fresh process                                   -> throughput_cpu_modernbert.json  (~13 min)
#   2. training vs BERT-base with the foreach DecoupledAdamW (bench/train_throughput.py; M2 eager and compiled,
#      BERT eager: compiling never gained BERT anything here)        -> train_cpu_best.json               (~6 min)
#   3. bf16 autocast vs fp32 embeddings on the retrieval set: docs/s and cosine to fp32 (bound 0.999), and M2
#      vs ModernBERT embedding the same bucketed batches (m2-bert-tiny / modernbert-tiny: seconds)
#                                                                    -> embed_bf16_cpu_retrieval_set.json (~1 min)
#   4. where a training step's time goes (bench/profile_train.py)    -> profile_train_cpu.txt             (~1 min)
#   5. bench/speed_report.py: speed_cpu.{md,png} and README.md's speed table from the JSONs.
# Each step writes into $OUT (default bench/results) only when it completes (atomic writes); a failed step is
# named at the end and the others still run. QUICK=1 runs every step at tiny sizes in a scratch folder (a plumbing
# check in a few minutes, which measures nothing).
#   bash bench/speed24.sh                  # the results, into bench/results
#   QUICK=1 OUT=/tmp/s24 bash bench/speed24.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=$THREADS
status=0
step() {  # step NAME CMD...: log to $OUT/speed24_NAME.log, remember failures
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/speed24_$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - t0)) s (log: $OUT/speed24_$name.log)"
  [ $rc -eq 0 ] || status=1
}

if [ "${QUICK:-0}" = 1 ]; then
  FWD=(--quick --lengths 256 640 --long-from 640)
  TRAIN=(--m2 m2-bert-tiny --bert bert-tiny --steps 1 --warmup 0 --compile false)
  EMBED=(--preset m2-bert-tiny --reference-preset modernbert-tiny --docs 8 --max-length 512 --repeats 1)
  PROFILE=(--m2 m2-bert-tiny --bert bert-tiny --batch 2 --rows 5)
else
  FWD=(--lengths 512 2048 8192 32768 --warmup 1 --repeats 3 --long-warmup 0 --solo-repeats 1)
  TRAIN=(--compile m2 --steps 3 --warmup 1)
  EMBED=(--preset m2-bert-tiny --reference-preset modernbert-tiny --docs 388 --repeats 3)
  PROFILE=(--rows 15)
fi

step forward nice -n 0 "$PY" bench/throughput.py --reference modernbert --compile false --precision best --rss \
  --threads "$THREADS" "${FWD[@]}" --json "$OUT/throughput_cpu_modernbert.json"
step train "$PY" bench/train_throughput.py "${TRAIN[@]}" --json "$OUT/train_cpu_best.json"
step embed "$PY" bench/embed_throughput.py --shared "$SHARED" --corpus retrieval --bf16-check --reference modernbert \
  "${EMBED[@]}" --out "$OUT" --name embed_bf16_cpu_retrieval_set --overwrite
step profile "$PY" bench/profile_train.py "${PROFILE[@]}" --out "$OUT/profile_train_cpu.txt"
if [ "$OUT" = bench/results ]; then
  step report "$PY" bench/speed_report.py --results "$OUT" --readme README.md
else  # elsewhere, beside the committed forward JSONs vs BERT-base (not remeasured here)
  cp -n bench/results/throughput_cpu_best.json bench/results/throughput_cpu_8192_eager.json "$OUT"/
  step report "$PY" bench/speed_report.py --results "$OUT"
fi
exit $status

#!/usr/bin/env bash
# Issue 24's speed results, all in one go, on a QUIET CPU (2 threads, ~35 min; nothing else running: the
# numbers are only as good as the machine is idle), offline. Every JSON records the CPU model: ratios from
# different CPUs do not compare (the report refuses to hide a mix), so all of them are measured here, in one go:
#   1. forward vs ModernBERT-base (bench/throughput.py --reference modernbert): 512 / 2048 / 8192 side by side,
#      eager in fp32 and under bf16 autocast, each model's best compared; 32768 M2 alone; each model's peak RSS
#      per length in a fresh process                                   -> throughput_cpu_modernbert.json  (~10 min)
#   1b. forward vs BERT-base, the same way at 128 / 512 / 2048 / 8192 (compiling gained M2 at most 7% at 128
#      and BERT nothing on the CPUs measured so far, and costs minutes per length, so eager only)
#                                                                    -> throughput_cpu_best.json          (~8 min)
#   2. training vs BERT-base with the foreach DecoupledAdamW (bench/train_throughput.py; M2 eager and compiled,
#      BERT eager: compiling never gained BERT anything here; each in fp32 and under bf16 autocast)
#                                                                    -> train_cpu_best.json               (~7 min)
#   3. bf16 autocast vs fp32 embeddings on the retrieval set: docs/s and cosine to fp32 (bound 0.999), and M2
#      vs ModernBERT embedding the same bucketed batches (m2-bert-tiny / modernbert-tiny, documents cut at
#      modernbert-tiny's 512 positions: seconds; the base sizes are step 1's), and the bf16 check again at
#      m2-bert-base-80m on 96 documents                  -> embed_bf16_cpu_retrieval_set{,_base}.json (~5 min)
#   4. where a training step's time goes, and M2's and ModernBERT's forward at 8192 under bf16
#      (bench/profile_train.py)                       -> profile_train_cpu.txt, profile_forward_cpu_8192_bf16.txt (~2 min)
#      and the long conv's transposes whole vs in blocks (bench/transpose_blocks.py) -> transpose_blocks_cpu.json
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
  BERT_FWD=(--quick --lengths 128 256)
  TRAIN=(--m2 m2-bert-tiny --bert bert-tiny --steps 1 --warmup 0 --compile false --precision best)
  EMBED=(--preset m2-bert-tiny --reference-preset modernbert-tiny --docs 8 --max-length 512 --repeats 1)
  EMBED_BASE=(--preset m2-bert-tiny --max-length 256 --docs 4 --repeats 1)
  PROFILE=(--m2 m2-bert-tiny --bert bert-tiny --batch 2 --rows 5)
  PROFILE_FWD=(--m2 m2-bert-tiny --reference modernbert-tiny --length 256 --batch 1 --rows 5)
else
  FWD=(--lengths 512 2048 8192 32768 --warmup 1 --repeats 3 --long-warmup 0 --solo-repeats 1)
  TRAIN=(--compile m2 --precision best --steps 3 --warmup 1)
  BERT_FWD=(--lengths 128 512 2048 8192 --warmup 1 --repeats 3)
  EMBED=(--preset m2-bert-tiny --reference-preset modernbert-tiny --docs 388 --max-length 512 --repeats 3)
  EMBED_BASE=(--preset m2-bert-base-80m --max-length 512 --docs 96 --repeats 2)
  PROFILE=(--rows 15)
  PROFILE_FWD=(--length 8192 --batch 1 --rows 20)
fi

step forward nice -n 0 "$PY" bench/throughput.py --reference modernbert --compile false --precision best --rss \
  --threads "$THREADS" "${FWD[@]}" --json "$OUT/throughput_cpu_modernbert.json"
step forward_bert nice -n 0 "$PY" bench/throughput.py --reference bert --compile false --precision best \
  --threads "$THREADS" "${BERT_FWD[@]}" --json "$OUT/throughput_cpu_best.json"
step train "$PY" bench/train_throughput.py "${TRAIN[@]}" --json "$OUT/train_cpu_best.json"
step embed "$PY" bench/embed_throughput.py --shared "$SHARED" --corpus retrieval --bf16-check --reference modernbert \
  "${EMBED[@]}" --out "$OUT" --name embed_bf16_cpu_retrieval_set --overwrite
step embed_base "$PY" bench/embed_throughput.py --shared "$SHARED" --corpus retrieval --bf16-check "${EMBED_BASE[@]}" \
  --out "$OUT" --name embed_bf16_cpu_retrieval_set_base --overwrite
step profile "$PY" bench/profile_train.py "${PROFILE[@]}" --out "$OUT/profile_train_cpu.txt"
step profile_forward "$PY" bench/profile_train.py --forward --bf16 "${PROFILE_FWD[@]}" \
  --out "$OUT/profile_forward_cpu_8192_bf16.txt"
step transposes "$PY" bench/transpose_blocks.py --out "$OUT"
if [ "$OUT" = bench/results ]; then
  step report "$PY" bench/speed_report.py --results "$OUT" --readme README.md
else
  step report "$PY" bench/speed_report.py --results "$OUT"
fi
exit $status

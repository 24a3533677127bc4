#!/usr/bin/env bash
# The quality study (bench/quality_study.py) at ~50x the CPU study's tokens, sized for one H100/H200 in ~8 minutes:
# 3 pretraining runs (recommended M2, M2 with the original's recipe, BERT) of 3,200 batches x 256 x 128 tokens
# (105M tokens each, 51x the CPU study's 1,000 x 16 x 128), run three at a time on the one GPU (bf16 autocast), then
# GLUE (glue=small) for each. No lr probe on the GPU: lr 2e-3 for every model (the larger batch).
#
#   bash bench/gpu_study.sh                 # on the GPU machine: results in bench/results/gpu_study/
#   bash bench/gpu_study.sh --mini OUT      # a miniature on CPU (a few batches): checks the plumbing
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] && python=${PYTHON:-.venv/bin/python}
shared=${SHARED:-../shared}
if [[ "${1:-}" == "--mini" ]]; then
  out=${2:?usage: bash bench/gpu_study.sh --mini OUT}
  exec "$python" bench/quality_study.py --shared "$shared" --out "$out" --work "$out/work" --quick --device cpu
fi
out=${1:-bench/results/gpu_study}
work=${WORK:-/tmp/m2bert_gpu_study}
exec "$python" bench/quality_study.py --shared "$shared" --out "$out" --work "$work" --device gpu \
  --batches 3200 --batch-size 256 --evals 8 --parallel 3 --lr 2e-3 --lr-grid --context-rows 512

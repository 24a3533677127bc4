#!/usr/bin/env bash
# Is the quality study's SST-2 gap (M2 66.9 vs BERT 74.7 at the shared fine-tuning lr 2e-4) the fine-tuning lr?
# Sweeps SST-2's lr (1e-4, 2e-4, 5e-4; glue=small otherwise) for the study's pretrained M2 (filters=keep) and
# BERT, the two at once, one thread each, and copies each sweep_report.{md,json} to
# bench/results/quality_glue_lr/<model>.{md,json}.
#   bash bench/glue_lr_check.sh /work/qstudy          # WORK: the quality study's --work folder
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: bench/glue_lr_check.sh QUALITY_STUDY_WORK_FOLDER}
SHARED=${SHARED:-../shared}
OUT=bench/results/quality_glue_lr
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for model in m2 bert; do
  [ -f "$WORK/pretrain/$model/hf/config.json" ] || { echo "$WORK/pretrain/$model/hf is missing: run bench/quality_study.py first" >&2; exit 2; }
done
for model in m2 bert; do
  .venv/bin/m2bert-glue -m glue=small "start.path=$WORK/pretrain/$model/hf" start.kind=hf "data.source=$SHARED/data/glue" \
    'tasks=[sst2]' chain.enabled=false data.pad_to_max_length=false save_final=none "run_root=$WORK/glue_lr" \
    "run_name=$model" glue.sst2.lr=1e-4,2e-4,5e-4 > "$WORK/glue_lr_$model.log" 2>&1 &
done
wait
for model in m2 bert; do
  report=$(ls -d "$WORK/glue_lr/$model"/multirun/*/ | tail -1)
  cp "$report/sweep_report.md" "$OUT/$model.md"
  cp "$report/sweep_report.json" "$OUT/$model.json"
done
cat "$OUT"/m2.md "$OUT"/bert.md

#!/usr/bin/env bash
# The quality study fine-tunes every model with one shared lr (2e-4, yamls/glue/small.yaml); is a GLUE gap the
# fine-tuning lr? Sweeps the lr of TASKS (glue=small otherwise) for the study's pretrained M2 (filters=keep) and
# BERT, the two at once, one thread each, and copies each sweep_report.{md,json} to
# bench/results/quality_glue_lr/<model>_<tasks>.{md,json}.
#   bash bench/glue_lr_check.sh /work/qstudy                                 # SST-2 at 1e-4, 2e-4, 5e-4
#   TASKS=cola,mrpc,stsb,rte LRS=5e-4 bash bench/glue_lr_check.sh /work/qstudy  # the other tasks at 5e-4
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: bench/glue_lr_check.sh QUALITY_STUDY_WORK_FOLDER}
SHARED=${SHARED:-../shared}
TASKS=${TASKS:-sst2}
LRS=${LRS:-1e-4,2e-4,5e-4}
TAG=${TASKS//,/_}
if [[ $TASKS == *,* && $LRS == *,* ]]; then  # Hydra would sweep the product of the tasks' lrs
  echo "several TASKS take one lr each (LRS=$LRS): sweep the lrs one task at a time" >&2; exit 2
fi
LR_OVERRIDES=()
for task in ${TASKS//,/ }; do LR_OVERRIDES+=("glue.$task.lr=$LRS"); done
OUT=bench/results/quality_glue_lr
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for model in m2 bert; do
  [ -f "$WORK/pretrain/$model/hf/config.json" ] || { echo "$WORK/pretrain/$model/hf is missing: run bench/quality_study.py first" >&2; exit 2; }
done
for model in m2 bert; do
  .venv/bin/m2bert-glue -m glue=small "start.path=$WORK/pretrain/$model/hf" start.kind=hf "data.source=$SHARED/data/glue" \
    "tasks=[$TASKS]" chain.enabled=false data.pad_to_max_length=false save_final=none "run_root=$WORK/glue_lr" \
    "run_name=${model}_$TAG" "${LR_OVERRIDES[@]}" > "$WORK/glue_lr_${model}_$TAG.log" 2>&1 &
done
wait
for model in m2 bert; do
  report=$(ls -d "$WORK/glue_lr/${model}_$TAG"/multirun/*/ | tail -1)
  cp "$report/sweep_report.md" "$OUT/${model}_$TAG.md"
  cp "$report/sweep_report.json" "$OUT/${model}_$TAG.json"
done
cat "$OUT/m2_$TAG.md" "$OUT/bert_$TAG.md"

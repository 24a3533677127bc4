#!/usr/bin/env bash
# GPU check of the fused Triton kernels (issue 6), all in one go, within ~8 minutes, offline:
#   1. correctness of the compiled kernels on the GPU (tests/kernels/test_gpu.py),
#   2. bench/kernels.py: each kernel vs PyTorch eager and torch.compile, bf16, B=32, H=768,
#   3. bench/throughput.py --device cuda --compile best, per length (128/512/2048/8192): M2 eager,
#      compiled (kernels torch + inductor), fused (kernels triton) and fused+compiled, BERT (SDPA) eager
#      and compiled,
#   4. parallel=fsdp vs parallel=ddp through Composer's launcher (2+ GPUs only).
#   Time limits: 120 + 100 + 8 × 30 (+ 240 with 2+ GPUs) s = 7.7 (11.7) min at most.
# Every result lands in ${OUT:-bench/results/gpu}. Fetches nothing: it runs in the project's venv, or,
# where there is none (a bare GPU machine whose python3 has torch, triton and transformers), on
# this checkout laid out as the installed package in /tmp/m2bert-site.
#   OUT=/tmp/gpu bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset TRITON_INTERPRET

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu_check.sh needs a CUDA GPU, and none is visible here." >&2
  echo "On CPU the kernels' correctness tests run under the Triton interpreter: make test" >&2
  exit 2
fi
if ! "$PY" -c "import m2bert" 2>/dev/null; then  # the package layout of pyproject.toml's package-dir, copied
  rm -rf /tmp/m2bert-site && mkdir -p /tmp/m2bert-site
  cp -r src/m2bert /tmp/m2bert-site/ && cp -r kernels /tmp/m2bert-site/m2bert/kernels \
    && cp -r yamls /tmp/m2bert-site/m2bert/yamls || exit 3
  export PYTHONPATH=/tmp/m2bert-site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch, triton, transformers; print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__)" | tee "$OUT/env.txt"
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, remember failures
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0))s (log: $OUT/$name.log)" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}
: > "$OUT/summary.txt"
step gpu_tests 120 "$PY" -m pytest tests/kernels/test_gpu.py -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml"
# Writes its JSON after every measurement: a run cut by the limit keeps what it measured.
step kernels_bench 100 "$PY" bench/kernels.py --json "$OUT/kernels.json" --repeats 10
LENGTHS=${LENGTHS:-128 512 2048 8192}
# Forward throughput per setting (torch.compile: inductor, its first call in the warm-up); one JSON per
# setting and length so that a setting that fails or runs out of time does not hide the others.
for L in $LENGTHS; do
  step "compile_torch_$L" 30 "$PY" bench/throughput.py --device cuda --kernels torch --compile best --lengths "$L" \
    --warmup 2 --repeats 5 --json "$OUT/compile_torch_$L.json"
  step "compile_triton_$L" 30 "$PY" bench/throughput.py --device cuda --kernels triton --compile best --lengths "$L" \
    --warmup 2 --repeats 5 --json "$OUT/compile_triton_$L.json"
done
# 4. parallel=fsdp (Composer's FSDP) vs parallel=ddp, one process per visible GPU, 2 batches of m2-bert-tiny on
#    the offline sample: the same eval loss and exported weights (bench/fsdp_vs_ddp.py). With one GPU FSDP
#    shards nothing (one rank holds every weight), so the check is skipped and says so.
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  step fsdp_vs_ddp 240 "$PY" bench/fsdp_vs_ddp.py --nproc "$NGPU" --batches 2 --out "$OUT/fsdp_vs_ddp"
else
  echo "fsdp_vs_ddp: skipped, $NGPU GPU visible (FSDP over one rank shards nothing; CPU FSDP2 runs in tests/test_pretrain.py)" \
    | tee -a "$OUT/summary.txt"
fi
tail -n 3 "$OUT/gpu_tests.log" | tee -a "$OUT/summary.txt"
exit $status

#!/bin/bash
# Lent-GPU wrapper for bench/gpu/native.py (runs on the device machine, in the repo root, $OUT set).
#   fill .device/ first with bench/gpu/prepare.sh (on the dev machine); needs carried:
#                  .device/whl   (apache_tvm_ffi cp312, diffusers, importlib_metadata wheels)
#                  .device/site  (the installed tvm package minus lib/libtvm_compiler.so)
#                  .device/bundle (manifest.json + libs/cuda-float16/*.so of a packed bundle)
# usage: [THEN=bench] bash bench/gpu/run.sh [bench|ncu|both|convlab|attnlab|gemmlab|quantlab|wglab] [extra args...]
#   bench (the default) prints a torch-profiler kernel table too; ncu over the whole bench ran
#   past its deadline on an H100 (378 s, nothing written): prefer bench.
set -o pipefail
T0=$SECONDS
WHAT=${1:-bench}; shift || true
OUT=${OUT:-/tmp/bench-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/whl/*.whl || exit 1
cp -r .device/site/tvm /tmp/site/
export PYTHONPATH=/tmp/site:$PWD TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1  # $PWD: the bench package, packer.runtime.cuda_graph
LOG=$OUT/bench_stdout.txt; : > "$LOG"
if [[ "$WHAT" == *lab ]]; then  # bench/gpu/{conv,attn,gemm}lab.py (.device/$WHAT)
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
  python3 -m bench.gpu.$WHAT run --lib .device/$WHAT 2>&1 | tee -a "$LOG"
  rc=$?
  [ -z "$THEN" ] && exit $rc
  WHAT=$THEN  # THEN=bench: the full bench after the lab, in the same call
fi
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu,memory.used --format=csv
  which ncu nsys; uname -r; } 2>&1 | tee -a "$LOG"
if [ "$WHAT" != ncu ]; then
  python3 -m bench.gpu.native --bundle .device/bundle --out "$OUT" "$@" 2>&1 | tee -a "$LOG"
  echo "bench rc=$? at $((SECONDS - T0)) s" | tee -a "$LOG"
fi
if [ "$WHAT" != bench ]; then
  left=$((${NCU_DEADLINE:-560} - (SECONDS - T0)))
  echo "ncu: $left s left" | tee -a "$LOG"
  if [ $left -gt 60 ]; then
    timeout $left ncu --clock-control none --profile-from-start off --section SpeedOfLight \
        --launch-count 3000 --csv --page details --log-file "$OUT/ncu_unet.csv" \
        python3 -m bench.gpu.native --bundle .device/bundle --mode ncu --out /tmp/ncu-out \
        > "$OUT/ncu_app.txt" 2>&1
    echo "ncu rc=$? at $((SECONDS - T0)) s; $(wc -l < "$OUT/ncu_unet.csv") csv lines" | tee -a "$LOG"
  fi
fi

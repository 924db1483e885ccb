#!/bin/bash
# MetaSchedule tuning on the lent GPU (runs THERE, in the repo root, $OUT set), in calls:
#   here, once:  python -m packer.compile.tuning.tasks extract ... --out DIR   (tasks.json)
#                bash bench/gpu/prepare.sh                 (.device/site, .device/whl)
#                xz -9 -T2 -c <tvm>/lib/libtvm_compiler.so | split -b 30000000 -d - .tune/compiler.xz.part
#                cp DIR/tasks.json .tune/                  (both ignored: /.tune/ in .git/info/exclude)
#   there:       bash bench/gpu/tune.sh stage    carry .device/site .device/whl .tune/compiler.xz.part00
#                bash bench/gpu/tune.sh stage    carry .tune/compiler.xz.part01 .tune/tasks.json
#                bash bench/gpu/tune.sh tune FIRST COUNT TRIALS [SECONDS]   (repeat; no carry)
#                PICK=22,25,11 bash bench/gpu/tune.sh tune 0 0 16 400      (these task numbers)
# The machine keeps /tmp while warm (30 s idle), so back-to-back calls build on each other;
# every `tune` call copies the whole database to $OUT (database_*.json) and prints the best
# time per kernel. The compiler is the installed wheel's libtvm_compiler.so, nothing rebuilt.
set -o pipefail
OUT=${OUT:-/tmp/tune-out}; mkdir -p "$OUT" /tmp/stage
case "$1" in
stage)
  for d in .device/site .device/whl; do [ -d "$d" ] && cp -r "$d" /tmp/stage/; done
  for f in .tune/*; do [ -f "$f" ] && cp "$f" /tmp/stage/; done
  ls -la /tmp/stage
  ;;
tune)
  FIRST=${2:-0}; COUNT=${3:-8}; TRIALS=${4:-32}; SECONDS_LEFT=${5:-500}
  if [ ! -f /tmp/site/tvm/lib/libtvm_compiler.so ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site /tmp/stage/whl/*.whl || exit 1
    cp -r /tmp/stage/site/tvm /tmp/site/
    cat /tmp/stage/compiler.xz.part* | python3 -c \
        "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" \
        > /tmp/site/tvm/lib/libtvm_compiler.so || exit 1
  fi
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PATH=/usr/local/cuda/bin:$PATH
  export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  unset TVM_USE_RUNTIME_LIB
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import tvm; print('tvm', tvm.__version__, 'cuda', tvm.cuda(0).exist, tvm.cuda(0).compute_version)"
  # --seconds stops between kernels (each kernel's records land when it ends); timeout is the
  # backstop. Output to a file, not a pipe: MetaSchedule's worker pools could hold a pipe open.
  timeout $((SECONDS_LEFT + 60)) python3 -m packer.compile.tuning.tasks tune \
      --tasks /tmp/stage/tasks.json --work-dir /tmp/tunedb --first "$FIRST" --count "$COUNT" \
      --trials "$TRIALS" --builders "$(nproc)" --seconds "$SECONDS_LEFT" ${PICK:+--pick "$PICK"} \
      > /tmp/tune.log 2>&1
  echo "tune rc=$? after $SECONDS s"
  grep -E "^task |^stopping|Sending|rror|Exception|finished|Total trials|Thread 0x|File \"|tuned " /tmp/tune.log \
      | cut -c1-300 | tail -${LOG_LINES:-60}
  python3 -m packer.compile.tuning.tasks report --tasks /tmp/stage/tasks.json --work-dir /tmp/tunedb \
      | tee "$OUT/report.txt"
  cp /tmp/tunedb/database_workload.json /tmp/tunedb/database_tuning_record.json "$OUT/" 2>/dev/null
  ls -la "$OUT"
  ;;
*) echo "usage: $0 stage | tune FIRST COUNT TRIALS [SECONDS]"; exit 2 ;;
esac

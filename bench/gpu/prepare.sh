#!/bin/bash
# Run HERE (the dev machine) before `run` on the lent GPU: fills the ignored .device/ folder
# that bench/gpu/run.sh needs there (≈ 30 MB; name ".device" in the run call's carry).
#   usage: bash bench/gpu/prepare.sh [BUNDLE_DIR [QUANTIZED_BUNDLE_DIR...]]
#          (default /tmp/sdpack-bench/bundle-a; each quantized bundle's manifest and cuda-float16
#          libraries go to .device/quant/<scheme>, for run.sh's `--quantized .device/quant/*`)
set -euo pipefail
BUNDLE=${1:-/tmp/sdpack-bench/bundle-a}
shift || true
cd "$(dirname "$0")/../.."
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
rm -rf .device/whl .device/site .device/bundle .device/quant
mkdir -p .device/whl .device/site .device/bundle/libs
# the device has python 3.12 and no diffusers / importlib_metadata / tvm-ffi
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .device/whl apache-tvm-ffi==0.1.14.post1 diffusers==0.42.1 importlib_metadata==10.2.0
# runtime-only TVM: the installed package minus the 248 MB compiler library (and headers/web)
TVM=$(python3 -c "import tvm, os; print(os.path.dirname(tvm.__file__))")
(cd "$TVM/.." && tar cf - --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty \
    --exclude=tvm/src --exclude=tvm/web --exclude=__pycache__ tvm) | tar xf - -C .device/site
if [ -d "$BUNDLE" ]; then  # the labs need no bundle
  cp "$BUNDLE/manifest.json" .device/bundle/
  cp -r "$BUNDLE/libs/cuda-float16" .device/bundle/libs/
fi
for q in "$@"; do  # quantized bundles of the same checkpoint
  scheme=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['quantization']['scheme'])" "$q/manifest.json")
  mkdir -p ".device/quant/$scheme/libs"
  cp "$q/manifest.json" ".device/quant/$scheme/"
  cp -r "$q/libs/"cuda*-float16 ".device/quant/$scheme/libs/"
done
du -sh .device/*

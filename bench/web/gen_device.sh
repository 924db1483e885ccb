#!/bin/bash
# The browser generation bench (bench/web/gen_bench.py) on the lent GPU machine, WebGPU on its NVIDIA
# adapter. Fill .device/ first (here: bash bench/web/prepare_gen.sh BUNDLE), then, one call right after
# the other (the machine stays warm 30 s between calls):
#   run("bash bench/web/device.sh stash 1", carry=[".device/web/p1"])
#   run("bash bench/web/device.sh stash 2", carry=[".device/web/p2"])
#   run("bash bench/web/gen_device.sh run [gen_bench args]", carry=[".device/web/p3", ".device/web/whl", ".device/gen"])
# `run`: unpacks Chromium and the carried .debs (Vulkan loader, libglvnd, fonts), links the libraries the
# machine lacks, makes the full-size bundle with random weights from the skeleton (synth_bundle.py make),
# publishes it into a directory hub (gen_bench.py --bundle: packer.s publish, commit derived
# there), then runs every variant x flag set (default: webgpu-float32,webgpu-float16 x
# default,norobust,f16, --profile; later arguments override) loading by pinned URL.
# Output ($OUT): gen_device.txt (the log and tables), gen_bench.json, gen_images.tgz (PNGs),
# chromium_logs.tgz.
# More models in the same call: every .device/gen/skel-TAG.tar.xz (prepare_gen.sh's TAG=BUNDLE
# arguments, e.g. the same model quantized) is synthesized with the same seed — so a quantized
# skeleton of the same model gets the quantization of the same weights — published beside the
# first as bench/synthetic-seed0-TAG and run after it with the same arguments, its variants
# EXTRA_VARIANTS (default webgpu-float16); outputs gen_bench-TAG.json, gen_images-TAG.tgz, and the
# PSNR of each of its PNGs against the first model's of the same dtype.
# Env: ADAPTER=nvidia|swiftshader (default: nvidia where NVIDIA's Vulkan ICD is, else swiftshader);
#      GEN_DEADLINE=s (no new browser run past it; default 420); DRY_RUN=1 (a rehearsal on the dev VM:
#      nothing is unpacked into /, the system's Python packages are used);
#      NATIVE=DIR: afterwards run the native CUDA bench (bench/gpu/run.sh bench $NATIVE_ARGS) with DIR's
#      whl/ site/ bundle/ (bench/gpu/prepare.sh's .device/{whl,site,bundle}, put there by an earlier call:
#      run("bash bench/web/gen_device.sh stash-native", carry=[".device/whl", ".device/site", ".device/bundle"])
#      — the browser carry leaves no room for them in the same call).
# Native generation (bench/web/native_gen.py run; default on when the bundle has libraries of the native
# device's kind and the stash below holds the runtime, NATIVE_GEN=0: off): after the browser runs, the same
# bundle, prompt, negative prompt, seed, steps, guidance and scheduler (read from gen_bench.json) through
# packer's own native runtime (Pipeline, as `packer generate`) with runtime-only TVM, on every cuda variant
# (NATIVE_VARIANTS=a,b to choose; NATIVE_DEVICE=cpu for llvm ones), plus a diffusers fp16 reference
# (NATIVE_DIFFUSERS=auto|on|off); PSNR of every browser PNG vs the native ones. It needs .device/native
# (bench/web/prepare_gen.sh makes it when BUNDLE has cuda libraries), which travels with Chromium's part 2:
#   run("bash bench/web/device.sh stash 1", carry=[".device/web/p1"])
#   run("bash bench/web/device.sh stash 2 && bash bench/web/gen_device.sh stash-gen-native",
#       carry=[".device/web/p2", ".device/native"])
#   run("bash bench/web/gen_device.sh run [gen_bench args]", carry=[".device/web/p3", ".device/web/whl", ".device/gen"])
# Without that stash the cuda variants are dropped from the skeleton and the browser bench runs alone.
# Its output: $OUT/native_gen.json, $OUT/native_gen.tgz (native.<variant>.png, diffusers.float16.png),
# the table in gen_device.txt. It gets what is left of NATIVE_LIMIT (default 590) s since the start.
set -uo pipefail
STASH=/root/sdpack-web-stash  # device.sh's: its stash calls fill it
NATIVE_STASH=/root/sdpack-native-stash
GEN_NATIVE=/root/sdpack-gen-native  # .device/native, stashed by stash-gen-native
WORK=/tmp/sdpack-gen
OUT=${OUT:-/tmp/sdpack-gen-out}
mkdir -p "$STASH" "$OUT"
case "${1:-}" in
  stash-native)
    rm -rf "$NATIVE_STASH" && mkdir -p "$NATIVE_STASH" && cp -r .device/whl .device/site .device/bundle "$NATIVE_STASH"/ \
      && du -sh "$NATIVE_STASH"/* && exit 0; exit 1 ;;
  stash-gen-native)
    rm -rf "$GEN_NATIVE" && mkdir -p "$GEN_NATIVE" && cp -r .device/native/. "$GEN_NATIVE"/ \
      && du -sh "$GEN_NATIVE"/* && exit 0; exit 1 ;;
  run) shift ;;
  *) echo "usage: gen_device.sh run [gen_bench args] | stash-native | stash-gen-native"; exit 2 ;;
esac
[ -d .device/web/p3 ] && cp .device/web/p3/* "$STASH"/
T0=$SECONDS
exec > >(tee -a "$OUT/gen_device.txt") 2>&1
# AGAIN=1: a follow-up call on the same warm machine: Chromium, the bundle and the hub of the last
# call are reused (no unpack, no synthesis, no publish), only gen_bench runs again with this call's
# arguments (and native generation unless NATIVE_GEN=0).
KEEP=""
[ -n "${AGAIN:-}" ] && [ -d "$WORK/hub" ] && [ -x "$WORK/chromium/chromium" ] && KEEP=1
if [ -z "$KEEP" ]; then
  rm -rf "$WORK" && mkdir -p "$WORK/lib" "$WORK/out"
  cat "$STASH"/chromium.tar.xz.part* | xz -d | tar -C "$WORK" -xf - || { ls -la "$STASH"; exit 1; }
else
  echo "AGAIN: reusing Chromium, bundle and hub in $WORK"
fi
CR=$WORK/chromium
if [ -z "${DRY_RUN:-}" ]; then
  for f in .device/gen/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
ldconfig -p | awk 'NR > 1 {print $1}' | sort -u > "$WORK/have"
for f in "$CR"/lib/*; do grep -qx "$(basename "$f")" "$WORK/have" || ln -sf "$f" "$WORK/lib/"; done
echo "chromium $(cat "$CR/VERSION"); libraries linked from the package: $(ls "$WORK/lib" | wc -l) of $(ls "$CR/lib" | wc -l); unpacked at $((SECONDS - T0)) s"
export LD_LIBRARY_PATH=$WORK/lib:/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FONTCONFIG_FILE=/etc/fonts/fonts.conf
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${ADAPTER:-}" ]; then [ -f "$ICD" ] && ADAPTER=nvidia || ADAPTER=swiftshader; fi
# NVIDIA's ICD is not on the loader's default path; VK_DRIVER_FILES makes it the only driver (SwiftShader
# hidden: an adapter that comes up is the GPU). Never powerPreference high-performance (null there).
[ "$ADAPTER" = nvidia ] && export VK_DRIVER_FILES=$ICD
echo "adapter flags: $ADAPTER; VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
"$CR/chromium" --version || { ldd "$CR/chromium" | grep "not found"; exit 1; }
if [ -z "${DRY_RUN:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/web/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nproc; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>&1
if [ -z "$KEEP" ]; then
tar -C "$WORK" -xJf .device/gen/skel.tar.xz || exit 1
if [ -f "$GEN_NATIVE/skel-cuda.tar.xz" ]; then tar -C "$WORK" -xJf "$GEN_NATIVE/skel-cuda.tar.xz" || exit 1; fi
# libraries kept out of skel.tar.xz and not stashed (the cuda ones): their variants leave the skeleton
python3 - "$WORK/skel" <<'PY' || exit 1
import json, os, sys
skel = sys.argv[1]
doc = json.load(open(f"{skel}/manifest.json"))
gone = [k for k, t in doc["targets"].items() if not all(os.path.exists(f"{skel}/{p}") for p in t["libs"].values())]
if gone:
    for k in gone:
        paths = set(doc["targets"].pop(k)["libs"].values())
        doc["files"] = [f for f in doc["files"] if f["path"] not in paths]
    json.dump(doc, open(f"{skel}/manifest.json", "w"))
    print(f"skeleton: variants without their libraries dropped: {gone}")
PY
python3 -m bench.web.synth_bundle make "$WORK/skel" "$WORK/bundle" || exit 1
echo "bundle made at $((SECONDS - T0)) s"
for x in .device/gen/skel-*.tar.xz; do
  [ -f "$x" ] || continue
  tag=$(basename "$x" .tar.xz) && tag=${tag#skel-}
  rm -rf "${WORK:?}/m-$tag" && mkdir -p "$WORK/m-$tag" && tar -C "$WORK/m-$tag" -xJf "$x" || exit 1
  python3 -m bench.web.synth_bundle make "$WORK/m-$tag/skel" "$WORK/m-$tag/bundle" \
    --model-id "bench/synthetic-seed0-$tag" || exit 1
  echo "bundle $tag made at $((SECONDS - T0)) s"
done
fi
# a model's source for gen_bench: its bundle (published on first use), then the tag publish made
source_of() {
  local b=$1/bundle
  if [ -z "$KEEP" ]; then echo "--bundle $b --hub $WORK/hub"; return; fi
  python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))["model"]; print("--hub", sys.argv[2], "--repo", m["id"], "--rev", "v" + m["version"])' \
    "$b/manifest.json" "$WORK/hub"
}
# every model's run: this page and browser, the adapter, a profile, time limits
COMMON=(--page .device/gen/page --chromium "$CR/chromium" --adapter "$ADAPTER" --profile --timeout 150
  --deadline "${GEN_DEADLINE:-420}")
# shellcheck disable=SC2046
python3 -m bench.web.gen_bench $(source_of "$WORK") "${COMMON[@]}" --variants webgpu-float32,webgpu-float16 \
  --flag-sets default,norobust,f16 --out "$WORK/out" --json "$OUT/gen_bench.json" "$@"
echo "gen_bench rc=$? at $((SECONDS - T0)) s"
(cd "$WORK/out" && tar -czf "$OUT/gen_images.tgz" ./*.png)
for m in "$WORK"/m-*; do
  [ -f "$m/bundle/manifest.json" ] || continue
  tag=${m##*/m-}
  echo "== model $tag at $((SECONDS - T0)) s"
  # shellcheck disable=SC2046
  python3 -m bench.web.gen_bench $(source_of "$m") "${COMMON[@]}" --flag-sets f16 "$@" \
    --variants "${EXTRA_VARIANTS:-webgpu-float16}" --out "$WORK/out-$tag" --json "$OUT/gen_bench-$tag.json"
  echo "gen_bench $tag rc=$? at $((SECONDS - T0)) s"
  (cd "$WORK/out-$tag" && tar -czf "$OUT/gen_images-$tag.tgz" ./*.png)
  python3 - "$WORK/out" "$WORK/out-$tag" "$tag" <<'PY'
import sys
from pathlib import Path

from bench.web.native_gen import psnr, read_png

first, other, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for png in sorted(other.glob("*.cold.png")):
    dtype = png.name.split(".")[0].rsplit("-", 1)[-1]
    for ref in sorted(first.glob(f"*-{dtype}.*.cold.png")):
        print(f"PSNR {tag} {png.name} vs {ref.name}: {psnr(read_png(png), read_png(ref)):.2f} dB")
PY
done
for f in "$WORK"/out/chromium.*.log; do grep -av TextRunHarfBuzz "$f" | tail -c 400000 > "$f.t" && mv "$f.t" "$f"; done
(cd "$WORK/out" && tar -czf "$OUT/chromium_logs.tgz" ./chromium.*.log)
NDEV=${NATIVE_DEVICE:-cuda}
NKIND=$([ "$NDEV" = cpu ] && echo llvm || echo cuda)
HAS_NATIVE=$(python3 -c 'import json, sys; print(sum(t["kind"] == sys.argv[2] for t in json.load(open(sys.argv[1]))["targets"].values()))' \
  "$WORK/bundle/manifest.json" "$NKIND" 2>/dev/null)
if [ "${NATIVE_GEN:-}" != 0 ] && [ "${HAS_NATIVE:-0}" -gt 0 ] && [ -f "$GEN_NATIVE/tvm-site.tar.xz" ]; then
  left=$((${NATIVE_LIMIT:-590} - (SECONDS - T0)))
  echo "== native generation ($NDEV, $HAS_NATIVE $NKIND variants) at $((SECONDS - T0)) s, $left s left"
  (
    NS=$WORK/native-site && rm -rf "$NS" && mkdir -p "$NS" && tar -C "$NS" -xJf "$GEN_NATIVE/tvm-site.tar.xz" || exit 1
    if [ -z "${DRY_RUN:-}" ]; then  # the wheels are cp312 (the machine's python); DRY_RUN uses the system's
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$NS" "$GEN_NATIVE"/whl/*.whl || exit 1
    fi
    export PYTHONPATH=$NS${PYTHONPATH:+:$PYTHONPATH} TVM_USE_RUNTIME_LIB=1
    timeout "$left" python3 -m bench.web.native_gen run --bundle "$WORK/bundle" --gen-json "$OUT/gen_bench.json" \
      --images "$WORK/out" --device "$NDEV" --variants "${NATIVE_VARIANTS:-auto}" --diffusers "${NATIVE_DIFFUSERS:-auto}" \
      --out "$WORK/native"
  )
  echo "native_gen rc=$? at $((SECONDS - T0)) s"
  [ -f "$WORK/native/native_gen.json" ] && cp "$WORK/native/native_gen.json" "$OUT/"
  (cd "$WORK/native" 2>/dev/null && ls ./*.png >/dev/null 2>&1 && tar -czf "$OUT/native_gen.tgz" ./*.png)
elif [ "${NATIVE_GEN:-}" = 1 ]; then
  echo "== native generation asked for, but: $NKIND variants in the bundle: ${HAS_NATIVE:-?}; runtime stashed: $([ -f "$GEN_NATIVE/tvm-site.tar.xz" ] && echo yes || echo no)"
fi
if [ -n "${NATIVE:-}" ]; then
  echo "== native bench (bench/gpu/run.sh bench ${NATIVE_ARGS:-}) at $((SECONDS - T0)) s"
  for d in whl site bundle; do [ -e ".device/$d" ] || ln -s "$NATIVE/$d" ".device/$d"; done
  # shellcheck disable=SC2086
  bash bench/gpu/run.sh bench ${NATIVE_ARGS:-}
  echo "native rc=$? at $((SECONDS - T0)) s"
fi
echo "done at $((SECONDS - T0)) s"

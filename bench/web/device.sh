#!/bin/bash
# The loader bench (bench/web/loader.py) on the lent GPU machine: WebGPU on its own GPU, and on
# SwiftShader with its 16 cores. Fill .device/web first (bench/web/prepare_device.sh), then, one
# call right after the other (the machine stays warm 30 s between calls):
#   run("bash bench/web/device.sh stash 1", carry=[".device/web/p1"])
#   run("bash bench/web/device.sh stash 2", carry=[".device/web/p2"])
#   run("[SW_ARGS=...] bash bench/web/device.sh run [web_loader args]", carry=[".device/web/p3", ".device/web/page",
#       ".device/web/skel", ".device/web/whl", ".device/web/gl"])
# `run` unpacks Chromium, links the libraries the machine lacks, makes a full-size bundle with random
# weights (synth_bundle.py make), probes the WebGPU adapter under each flag set, then runs the
# bench for each adapter that came up. Output: $OUT/web_loader.txt and the JSON of each run.
set -uo pipefail
STASH=/root/sdpack-web-stash
WORK=/tmp/sdpack-web
OUT=${OUT:-/tmp/sdpack-web-out}
mkdir -p "$STASH" "$OUT"
case "${1:-}" in
  stash)
    cp .device/web/p"$2"/* "$STASH"/ && ls -la "$STASH" && exit 0 ;;
  run) shift ;;
  *) echo "usage: device.sh stash N | run [web_loader args]"; exit 2 ;;
esac
cp .device/web/p3/* "$STASH"/
T0=$SECONDS
LOG=$OUT/web_loader.txt
exec > >(tee -a "$LOG") 2>&1
rm -rf "$WORK" && mkdir -p "$WORK/lib"
cat "$STASH"/chromium.tar.xz.part* | xz -d | tar -C "$WORK" -xf - || exit 1
CR=$WORK/chromium
ldconfig -p | awk 'NR > 1 {print $1}' | sort -u > "$WORK/have"
for f in "$CR"/lib/* "$PWD"/.device/web/gl/*; do grep -qx "$(basename "$f")" "$WORK/have" || ln -sf "$f" "$WORK/lib/"; done
echo "chromium $(cat "$CR/VERSION"); libraries linked from the package: $(ls "$WORK/lib" | wc -l) of $(ls "$CR/lib" | wc -l)"
export LD_LIBRARY_PATH=$WORK/lib:/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# NVIDIA's Vulkan driver, where Vulkan loaders look (VK_DRIVER_FILES would hide every other driver,
# SwiftShader's too: Chromium then finds no WebGPU adapter at all)
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$ICD" ]; then
  mkdir -p /usr/share/vulkan/icd.d && { [ -e /usr/share/vulkan/icd.d/nvidia_icd.json ] || cp "$ICD" /usr/share/vulkan/icd.d/; }
  export VK_ADD_DRIVER_FILES=$ICD
fi
echo "Vulkan ICD: ${VK_ADD_DRIVER_FILES:-none found}"
"$CR/chromium" --version || { ldd "$CR/chromium" | grep "not found"; exit 1; }
if [ -z "${DRY_RUN:-}" ]; then  # DRY_RUN=1: a rehearsal on the dev VM, whose Python has these packages
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/web/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nproc; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m bench.web.synth_bundle make .device/web/skel "$WORK/bundle" || exit 1
echo "bundle made at $((SECONDS - T0)) s"
B=(python3 -m bench.web.loader --bundle "$WORK/bundle" --page .device/web --chromium "$CR/chromium" --timeout 120)
adapter_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["info"]["adapter"])' "$1" 2>/dev/null; }
# Flag sets for the machine's GPU, tried in turn until one gives a WebGPU adapter that is not SwiftShader.
HW=("--adapter hardware" "--adapter hardware --flag=--use-angle=vulkan" "--adapter hardware --flag=--use-angle=vulkan --flag=--enable-features=Vulkan,VulkanFromANGLE,DefaultANGLEVulkan")
i=0
for flags in "${HW[@]}"; do
  i=$((i + 1))
  echo "== probe $i: $flags"
  # shellcheck disable=SC2086
  VK_LOADER_DEBUG=error,warn,driver "${B[@]}" $flags --modes peer --repeats 1 --warmup 0 --json "$WORK/probe$i.json" --log "$WORK/chromium-probe$i.log"
  adapter=$(adapter_of "$WORK/probe$i.json")
  echo "adapter: ${adapter:-none}"
  if [ -n "$adapter" ] && [[ "$adapter" != *swiftshader* ]]; then
    echo "== bench on $adapter ($flags) at $((SECONDS - T0)) s"
    # shellcheck disable=SC2086
    "${B[@]}" $flags "$@" --json "$OUT/loader-hardware.json"
    break
  fi
  grep -av TextRunHarfBuzz "$WORK/chromium-probe$i.log" | tail -c 60000 > "$OUT/chromium-probe$i.log"  # no fonts there
done
# SW_ARGS: the SwiftShader run's own arguments (default: the same); skipped past SW_AFTER s (default 330)
if [ $((SECONDS - T0)) -lt "${SW_AFTER:-330}" ]; then
  echo "== bench on SwiftShader ($(nproc) cores) at $((SECONDS - T0)) s"
  # shellcheck disable=SC2086
  "${B[@]}" --adapter swiftshader ${SW_ARGS:-"$@"} --json "$OUT/loader-swiftshader.json" --log "$WORK/chromium-sw.log" \
    || grep -av TextRunHarfBuzz "$WORK/chromium-sw.log" | tail -c 60000 > "$OUT/chromium-sw.log"
fi
echo "done at $((SECONDS - T0)) s"

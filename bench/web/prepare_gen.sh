#!/bin/bash
# Fill .device/gen/ for bench/web/gen_device.sh: the browser generation bench on the lent GPU machine
# (no Chromium, no node, no network there). Run here (needs Debian's chromium, runtime-web/node_modules,
# pip, apt-get download):
#   bash bench/web/prepare_gen.sh BUNDLE    # BUNDLE: a packed bundle with webgpu variants (full size:
#                                           # packed with --targets webgpu, float16 + float32)
# Uses .device/web/{p1,p2,p3,whl} (Chromium in three parts, wheels) from bench/web/prepare_device.sh,
# which it runs first if .device/web/p3 is missing (FRESH=1: always). Makes
#   .device/gen/page           bench/web/gen_page.js built (gen_bench.py --build-page)
#   .device/gen/skel.tar.xz    BUNDLE without its shards (synth_bundle.py skeleton), xz'd: the full-size
#                              variants' wasm is ~50 MB raw, a few MB compressed
#   .device/gen/debs           Debian .debs unpacked into / there: libvulkan1 + libglvnd (NVIDIA's Vulkan
#                              driver needs them; shared/notes/webgpu-real-gpu.md), fonts-dejavu-core +
#                              fontconfig-config (without fonts Chromium aborts on a page with text)
set -euo pipefail
BUNDLE=${1:?usage: bash bench/web/prepare_gen.sh BUNDLE}
cd "$(dirname "$0")/../.."
if [ -n "${FRESH:-}" ] || [ ! -f .device/web/p3/chromium.tar.xz.part02 ]; then bash bench/web/prepare_device.sh "$BUNDLE"; fi
D=.device/gen
rm -rf "$D" && mkdir -p "$D/debs"
python bench/web/gen_bench.py --build-page "$D/build" >/dev/null
mv "$D/build/page" "$D/page" && rm -rf "$D/build"
TMP=$(mktemp -d)
python bench/web/synth_bundle.py skeleton "$BUNDLE" "$TMP/skel"
tar -C "$TMP" -cf - skel | xz -9 -T0 > "$D/skel.tar.xz"
rm -rf "$TMP"
(cd "$D/debs" && apt-get download -q libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libgles2 libopengl0 \
    fonts-dejavu-core fontconfig-config >/dev/null)
du -sh "$D"/* .device/web/p3 .device/web/whl
echo "carry for gen_device.sh run: $(du -shc "$D" .device/web/p3 .device/web/whl | tail -1)"

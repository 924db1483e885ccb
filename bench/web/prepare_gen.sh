#!/bin/bash
# Fill .device/gen/ for bench/web/gen_device.sh: the browser generation bench on the lent GPU machine
# (no Chromium, no node, no network there). Run here (needs Debian's chromium, runtime-web/node_modules,
# pip, apt-get download):
#   bash bench/web/prepare_gen.sh BUNDLE [TAG=BUNDLE2 ...]
#       BUNDLE: a packed bundle with webgpu variants (full size: packed with --targets webgpu, float16 +
#       float32); each TAG=BUNDLE2 (e.g. q4f16=the same checkpoint packed --quantize q4f16) becomes
#       .device/gen/skel-TAG.tar.xz, a second model gen_device.sh runs in the same call
# Uses .device/web/{p1,p2,p3,whl} (Chromium in three parts, wheels) from bench/web/prepare_device.sh,
# which it runs first if .device/web/p3 is missing (FRESH=1: always). Makes
#   .device/gen/page           bench/web/gen_page.js built (gen_bench.py --build-page)
#   .device/gen/skel.tar.xz    BUNDLE without its shards (synth_bundle.py skeleton), xz'd: the full-size
#                              variants' wasm is ~50 MB raw, a few MB compressed
#   .device/gen/debs           Debian .debs unpacked into / there: libvulkan1 + libglvnd (NVIDIA's Vulkan
#                              driver needs them; docs/design.md), fonts-dejavu-core +
#                              fontconfig-config (without fonts Chromium aborts on a page with text)
# and, when BUNDLE has CUDA libraries (add them with `python -m bench.web.native_gen add BUNDLE
# --variants cuda-float16,cuda-float32`) or NATIVE_GEN=1, .device/native/ for bench/web/native_gen.py
# (the same image natively, in the same call; NATIVE_GEN=0: not made):
#   .device/native/skel-cuda.tar.xz  the skeleton's libs/<cuda variant>/ (kept out of skel.tar.xz, so
#                                    the last call's carry stays the browser's)
#   .device/native/tvm-site.tar.xz   the installed tvm package without libtvm_compiler.so (runtime only)
#   .device/native/whl               cp312 wheels: apache-tvm-ffi, diffusers, importlib_metadata
# It travels with Chromium's part 2 (gen_device.sh's header has the call sequence).
set -euo pipefail
BUNDLE=${1:?usage: bash bench/web/prepare_gen.sh BUNDLE [TAG=BUNDLE2 ...]}
shift
cd "$(dirname "$0")/../.."
if [ -n "${FRESH:-}" ] || [ ! -f .device/web/p3/chromium.tar.xz.part02 ]; then bash bench/web/prepare_device.sh "$BUNDLE"; fi
D=.device/gen
rm -rf "$D" && mkdir -p "$D/debs"
python -m bench.web.gen_bench --build-page "$D/build" >/dev/null
mv "$D/build/page" "$D/page" && rm -rf "$D/build"
TMP=$(mktemp -d)
python -m bench.web.synth_bundle skeleton "$BUNDLE" "$TMP/skel"
CUDA_LIBS=$(python -c 'import json, sys
t = json.load(open(sys.argv[1]))["targets"]
print(" ".join(sorted({p.rsplit("/", 1)[0] for v in t.values() if v["kind"] == "cuda" for p in v["libs"].values()})))' "$BUNDLE/manifest.json")
tar -C "$TMP" -cf - $(for l in $CUDA_LIBS; do echo "--exclude=skel/$l"; done) skel | xz -9 -T0 > "$D/skel.tar.xz"
N=.device/native
rm -rf "$N"  # never a stale one: gen_device.sh would take its libraries for this bundle's
if [ "${NATIVE_GEN:-}" != 0 ] && { [ -n "$CUDA_LIBS" ] || [ "${NATIVE_GEN:-}" = 1 ]; }; then
  mkdir -p "$N/whl"
  [ -n "$CUDA_LIBS" ] && tar -C "$TMP" -cf - $(for l in $CUDA_LIBS; do echo "skel/$l"; done) | xz -9 -T0 > "$N/skel-cuda.tar.xz"
  [ -n "$CUDA_LIBS" ] && du -sh $(for l in $CUDA_LIBS; do echo "$TMP/skel/$l"; done)
  TVM=$(python -c "import tvm, os; print(os.path.dirname(tvm.__file__))")
  (cd "$TVM/.." && tar cf - --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty --exclude=tvm/src \
      --exclude=tvm/web --exclude=__pycache__ tvm) | xz -9 -T0 > "$N/tvm-site.tar.xz"
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$N/whl" \
      $(python -c 'import importlib.metadata as m
for n in ("apache-tvm-ffi", "diffusers", "importlib_metadata"): print(f"{n}=={m.version(n)}")')
  du -sh "$N"/*
  echo "carry for the stash call (.device/web/p2 + $N): $(du -shc .device/web/p2 "$N" | tail -1)"
fi
for extra in "$@"; do
  tag=${extra%%=*} && path=${extra#*=}
  rm -rf "$TMP/skel-$tag"
  python -m bench.web.synth_bundle skeleton "$path" "$TMP/skel-$tag/skel"
  tar -C "$TMP/skel-$tag" -cf - skel | xz -9 -T0 > "$D/skel-$tag.tar.xz"
done
rm -rf "$TMP"
(cd "$D/debs" && apt-get download -q libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libgles2 libopengl0 \
    fonts-dejavu-core fontconfig-config >/dev/null)
du -sh "$D"/* .device/web/p3 .device/web/whl
echo "carry for gen_device.sh run: $(du -shc "$D" .device/web/p3 .device/web/whl | tail -1)"

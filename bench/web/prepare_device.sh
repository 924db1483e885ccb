#!/bin/bash
# Fill .device/web/ for bench/web/device.sh: the loader bench on the lent GPU machine, which has no
# Chromium, no node and no network. Run here (needs Debian's chromium, runtime-web/node_modules, pip):
#   bash bench/web/prepare_device.sh BUNDLE        # BUNDLE: a full-size packed bundle (its shards stay here)
# Makes .device/web/{p1,p2,p3}  Chromium (/usr/lib/chromium, the libraries it links but glibc's and
#                               libstdc++'s, NSS's modules) as one tar.xz in three parts, ≤ 40 MB
#                               each: a call carries 64 MiB at most, so three calls in a row take them
#                               to the machine while it stays warm (device.sh stash PART, then run);
#       .device/web/page        the bench page, built (bench/web/loader.py --build-page);
#       .device/web/skel        BUNDLE without its shards (bench/web/synth_bundle.py skeleton);
#       .device/web/whl         cp312 wheels packer.bundle needs there (zstandard, jsonschema + deps: the versions here);
#       .device/web/gl          libglvnd's libraries (NVIDIA's Vulkan driver, libGLX_nvidia, needs
#                               libGLdispatch; that machine has no libglvnd).
set -euo pipefail
BUNDLE=${1:?usage: bash bench/web/prepare_device.sh BUNDLE}
D=.device/web
rm -rf "$D" && mkdir -p "$D"
python -m bench.web.loader --bundle "$BUNDLE" --build-page "$D/page-build"
mv "$D/page-build/page" "$D/page" && rm -rf "$D/page-build"
python -m bench.web.synth_bundle skeleton "$BUNDLE" "$D/skel"
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$D/whl" \
    $(python -c 'import importlib.metadata as m
for n in ("zstandard", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py"): print(f"{n}=={m.version(n)}")')
PKG=$(mktemp -d)
(cd "$PKG" && apt-get download -q libglvnd0 libglx0 libegl1 libopengl0 libgl1 libgles2 >/dev/null 2>&1 \
    && for f in ./*.deb; do dpkg -x "$f" x; done && rm ./*.deb)
mkdir -p "$D/gl" && cp -L "$PKG"/x/usr/lib/x86_64-linux-gnu/lib*.so.[0-9] "$D/gl/" && rm -rf "$PKG/x"
C=$PKG/chromium
mkdir -p "$C/lib" "$C/locales"
(cd /usr/lib/chromium && cp chromium chrome_crashpad_handler ./*.pak icudtl.dat snapshot_blob.bin v8_context_snapshot.bin \
    libEGL.so libGLESv2.so libvulkan.so.1 libvk_swiftshader.so vk_swiftshader_icd.json "$C/" && cp locales/en-US.pak "$C/locales/")
ldd /usr/lib/chromium/chromium | awk '{print $3}' | grep / \
    | grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.so' | xargs -I{} cp -L {} "$C/lib/"
cp -L /usr/lib/x86_64-linux-gnu/nss/*.so "$C/lib/"
dpkg-query -W -f='${Version}\n' chromium > "$C/VERSION"
tar -C "$PKG" -cf - chromium | xz -9 -T0 > "$PKG/chromium.tar.xz"
split -n 3 -d "$PKG/chromium.tar.xz" "$PKG/chromium.tar.xz.part"
for i in 1 2 3; do mkdir -p "$D/p$i" && mv "$PKG/chromium.tar.xz.part0$((i - 1))" "$D/p$i/"; done
rm -rf "$PKG"
du -sh "$D"/*

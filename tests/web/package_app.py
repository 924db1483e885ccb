"""A small app built from runtime-web's ``npm pack`` tarball, as an npm user builds one: the
tarball unpacked into the app's ``node_modules``, its declared dependencies taken from
runtime-web's own (installed by ``npm ci`` from the lockfile; nothing is downloaded), and the app
bundled with esbuild exactly as runtime-web/README.md says — so the published files, ``exports``,
the worker entry and the decode worker are what the app gets, not runtime-web/src.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "runtime-web"
APP_SOURCES = WEB / "test" / "browser" / "app"
# The README's esbuild line (entry points: the page, the model worker, the decode worker).
ESBUILD_ARGS = [
    "main.js",
    "worker.js",
    "@sdpack/runtime-web/decodeWorker.js",
    "--bundle",
    "--format=esm",
    "--platform=browser",
    "--target=es2022",
    "--outdir=dist",
    "--entry-names=[name]",
    "--external:fs",
    "--external:path",
    "--external:perf_hooks",
    "--external:ws",
    "--external:crypto",
    "--log-level=warning",
]


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )


def build_packaged_app(out: Path) -> Path:
    """The app folder (index.html, dist/main.js, dist/worker.js, dist/decodeWorker.js) under ``out``."""
    packs = out / "pack"
    packs.mkdir(parents=True)
    _run(["npm", "pack", "--silent", "--pack-destination", str(packs)], WEB)  # prepack builds dist/
    (tarball,) = packs.glob("*.tgz")
    app = out / "app"
    package = app / "node_modules" / "@sdpack" / "runtime-web"
    with tarfile.open(tarball) as tar:
        tar.extractall(out / "unpacked", filter="data")
    shutil.move(out / "unpacked" / "package", package)
    manifest = json.loads((package / "package.json").read_text())
    for dep, version in manifest["dependencies"].items():
        installed = WEB / "node_modules" / dep
        have = json.loads((installed / "package.json").read_text())["version"]
        assert have == version, (
            f"{dep}: the package declares {version}, runtime-web/node_modules has {have}"
        )
        link = app / "node_modules" / dep
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(installed.resolve(), target_is_directory=True)
    for name in ("index.html", "main.js", "worker.js"):
        shutil.copy(APP_SOURCES / name, app / name)
    _run([str(WEB / "node_modules" / ".bin" / "esbuild"), *ESBUILD_ARGS], app)
    return app

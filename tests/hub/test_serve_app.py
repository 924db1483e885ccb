"""`packer serve --app DIR`: the demo page and the models it loads from one origin."""

from __future__ import annotations

import threading

import pytest

from packer.errors import HubError
from packer.interface.publish import PublishArgs, publish
from packer.interface.serve import ServeArgs, serve
from tests.hub.test_hub_serve import REPO, fetch


@pytest.fixture
def served_app(bundles, tmp_path):
    hub_dir, app = tmp_path / "hub", tmp_path / "app"
    (app / "demo").mkdir(parents=True)
    (app / "demo" / "index.html").write_text("<!doctype html><p>demo</p>")
    (app / "demo" / "main.js").write_text("export const x = 1;")
    (tmp_path / "secret.txt").write_text("not for the web")
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir))
    serving = serve(ServeArgs(hub_dir, port=0, app=app))
    threading.Thread(target=serving.server.serve_forever, daemon=True).start()
    yield serving
    serving.stop()


def test_app_files_and_models_share_one_origin(served_app):
    base = served_app.url
    status, headers, body = fetch(f"{base}/app/demo/index.html")
    assert (
        status == 200
        and body.startswith(b"<!doctype html>")
        and headers["Content-Type"] == "text/html"
    )
    status, headers, _ = fetch(f"{base}/app/demo/main.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript"
    status, _, body = fetch(f"{base}/{REPO}/resolve/v1.0.0/manifest.json")
    assert status == 200 and b"sdpack.bundle" in body
    assert "/app/" in served_app.display()


@pytest.mark.parametrize(
    "path", ["/app/../secret.txt", "/app/%2e%2e/secret.txt", "/app/demo/missing.js", "/app/demo"]
)
def test_app_never_serves_outside_its_folder(served_app, path):
    status, _, body = fetch(f"{served_app.url}{path}")
    assert status == 404 and b"not for the web" not in body


def test_missing_app_dir_is_one_clear_error(bundles, tmp_path):
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=tmp_path / "hub"))
    with pytest.raises(HubError, match="no such app directory"):
        serve(ServeArgs(tmp_path / "hub", port=0, app=tmp_path / "nope"))

"""bench/web/gen_bench.py's host-side helpers: the dependency-free PNG writer and the table row."""

import zlib

from bench.web import gen_bench


def test_write_png_round_trip(tmp_path):
    w, h = 5, 3
    rgba = bytes((x * 40 + y * 7 + c) % 256 for y in range(h) for x in range(w) for c in range(4))
    path = tmp_path / "a.png"
    gen_bench.write_png(path, rgba, w, h)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    rows = [raw[i * (w * 4 + 1) : (i + 1) * (w * 4 + 1)] for i in range(h)]
    assert all(r[0] == 0 for r in rows)
    assert b"".join(r[1:] for r in rows) == rgba
    try:
        from PIL import Image
    except ImportError:
        return
    assert Image.open(path).convert("RGBA").tobytes() == rgba


def test_summarize_ok_and_failed():
    img = {
        "wallMs": 2000.0,
        "width": 64,
        "height": 64,
        "rgbaSha256": "ab",
        "timings": {"textEncoderMs": 10.0, "medianStepMs": 50.0, "vaeMs": 30.0, "steps": 4},
        "calls": {"medianUnetCallMs": 49.0},
    }
    ok = {
        "variant": "webgpu-float32",
        "flagSet": "default",
        "result": {
            "adapter": {
                "vendor": "nvidia",
                "architecture": "hopper",
                "features": ["timestamp-query"],
            },
            "device": {"features": []},
            "load": {"ms": 1500.0, "totalBytes": 2e6, "downloadEndMs": 900.0},
            "images": [img, {**img, "wallMs": 1000.0}],
            "profile": {
                "image": img,
                "components": {
                    "unet": {"dispatchesPerCall": 300, "gpuMsPerCall": 40.0, "spanMsPerCall": 45.0}
                },
            },
        },
    }
    row = gen_bench.summarize(ok)
    assert row["status"] == "ok" and row["adapter"] == "nvidia/hopper" and not row["adapter_f16"]
    assert (row["load_s"], row["cold_s"], row["warm_s"], row["step_ms"]) == (1.5, 2.0, 1.0, 50.0)
    assert row["same_image"] and row["prof_dispatches"] == 300
    bad = gen_bench.summarize(
        {
            "variant": "webgpu-float16",
            "flagSet": "f16",
            "result": {"fatal": "UnsupportedError: x\nstack"},
        }
    )
    assert bad["status"] == "FAIL" and bad["error"] == "UnsupportedError: x"
    gen_bench.print_table([row, bad])

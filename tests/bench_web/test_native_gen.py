"""bench/web/native_gen.py's host-side helpers: PNG reading, PSNR, the request and the browser PNGs."""

import numpy as np

from bench.web import gen_bench, native_gen


def _png(path, rgb):
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    gen_bench.write_png(path, rgba.tobytes(), rgb.shape[1], rgb.shape[0])


def test_read_png_psnr(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    _png(tmp_path / "a.png", a)
    assert np.array_equal(native_gen.read_png(tmp_path / "a.png"), a)
    assert native_gen.psnr(a, a) == float("inf")
    b = a.copy()
    b[0, 0, 0] ^= 1  # one LSB in 90 values: mse 1/90
    assert abs(native_gen.psnr(a, b) - 10 * np.log10(255**2 * 90)) < 1e-9
    assert np.isnan(native_gen.psnr(a, a[:2]))


def test_request_and_browser_images(tmp_path):
    px = np.zeros((4, 4, 3), np.uint8)
    _png(tmp_path / "webgpu-float16.default.0.png", px)
    _png(tmp_path / "webgpu-float16.default.1.png", px + 1)
    gen = {
        "args": {
            "prompt": "p",
            "negative_prompt": "n",
            "seed": "42",
            "steps": 3,
            "guidance": 5.0,
            "scheduler": "dpm++",
        },
        "runs": [
            {
                "variant": "webgpu-float16",
                "flagSet": "default",
                "images": ["webgpu-float16.default.0.png", "webgpu-float16.default.1.png"],
            },
            {"variant": "webgpu-float32", "flagSet": "default", "images": []},
        ],
    }
    req = native_gen.request_of(gen)
    assert req == {
        "prompt": "p",
        "negative_prompt": "n",
        "seed": 42,
        "steps": 3,
        "guidance": 5.0,
        "scheduler": "dpm++",
    }
    manifest = {
        "targets": {
            "webgpu-float16": {"kind": "webgpu", "dtype": "float16"},
            "cuda-float16": {"kind": "cuda", "dtype": "float16"},
            "cuda-float32": {"kind": "cuda", "dtype": "float32"},
        }
    }
    got = native_gen.browser_images(gen, tmp_path, manifest)
    assert [(b["variant"], b["dtype"], b["png"], b["same_in_run"]) for b in got] == [
        ("webgpu-float16", "float16", "webgpu-float16.default.0.png", False)
    ]
    assert native_gen.native_variants(manifest, "cuda", "auto") == ["cuda-float16", "cuda-float32"]


def test_cast_bundle():
    class B:
        manifest = {"x": 1}

        def load_params(self, component):
            return {"w": np.ones(2, np.float16), "ids": np.arange(2, dtype=np.int64)}

    cast = native_gen.CastBundle(B(), "float32")
    assert cast.manifest == {"x": 1}
    p = cast.load_params("unet")
    assert p["w"].dtype == np.float32 and p["ids"].dtype == np.int64

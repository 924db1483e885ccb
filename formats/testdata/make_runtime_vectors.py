"""Regenerate the runtime vectors in formats/testdata/ that the web runtime tests against.

    python formats/testdata/make_runtime_vectors.py [--check]

Writes ``schedulers.json`` (every scheduler a bundle can name, run by diffusers through
``packer.runtime.schedulers`` on a few configs and step counts: timesteps, sigmas, init noise
sigma and, for a small latent and a fixed fake model, every step's scaled input, model output and
previous sample) and ``tokenizer_cases.json`` (ids from the Python ``tokenizers`` library for the
golden bundle's tokenizer, raw and as the pipeline's 77 padded/truncated ids). ``--check``
regenerates in memory and fails if either file differs from what is committed (floats to
1e-5, :func:`close`).

Euler ancestral draws the noise it adds at step ``i`` from the spec's noise generator, stream
``i + 1`` (formats/README.md, "Seeded noise"). diffusers draws it with ``randn_tensor``; here that
name is patched in the euler-ancestral module, for the length of one run, to return our stream,
so the recorded samples are what any runtime following the spec must produce.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from packer.runtime import noise, schedulers  # noqa: E402
from packer.support.spec import TEXT_MAX_LENGTH  # noqa: E402

SD15 = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
    "prediction_type": "epsilon",
}
# (name, config, step counts). Together they cover each class's default timestep_spacing,
# all three spacings explicitly, both beta schedules, both prediction types, class defaults for
# clip_sample/set_alpha_to_one (the "linear" config leaves them out), round-half-to-even in
# linspace spacing (6 and 7 steps) and DPM++'s lower_order_final below and above 15 steps.
CONFIGS = [
    ("sd15", SD15, [4, 20]),
    (
        "sd15-v-trailing",
        {**SD15, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        [4],
    ),
    (
        "linear-leading",
        {
            "num_train_timesteps": 1000,
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "steps_offset": 1,
            "skip_prk_steps": True,
            "timestep_spacing": "leading",
        },
        [7],
    ),
    ("sd15-linspace", {**SD15, "timestep_spacing": "linspace"}, [6]),
]
LATENT_SHAPE = (1, 4, 2, 2)
SEED = 42

TOKENIZER = HERE / "bundle" / "tokenizer" / "tokenizer.json"
MAX_LENGTH, PAD_ID = TEXT_MAX_LENGTH, 690
LONG = (
    "a photo of an astronaut riding a horse on the moon, oil painting of a castle at sunset over "
    "mountains, highly detailed, sharp focus, trending on art station, beautiful forest river and "
    "lake with red green yellow white and black dragons flying in the sky among the clouds, anime "
    "girl with blue hair in a cyberpunk city street at night, dog and cat sitting in the garden"
)
TEXTS = [
    "",
    "a photo of an astronaut riding a horse on the moon",
    "A PHOTO Of An AstroNaut RIDING a Horse",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n  and   runs    of     spaces",
    "   \t\n ",
    "hello, world! (highly-detailed:1.2) [sharp focus] {cyberpunk} <lora:x>",
    "don't it's we're they've i'm you'll he'd",
    "DON'T IT'S WE'RE",
    "'s 're 'll alone",
    "numbers 1234567890 3.14 1e-5 2026 42nd",
    "mixed123abc456def",
    "café naïve façade crème brûlée",
    "cafe\u0301 decomposed",
    "日本語のテキスト",
    "한국어 문장",
    "Привет мир",
    "ΣΊΣΥΦΟΣ greek capitals",
    "İstanbul",
    "emoji 🐉🔥 dragon 👩‍🚀",
    "ﬁ ligature ½",
    "a\u00a0non-breaking\u3000ideographic\u2003em space",
    "zero\u200bwidth",
    "#hashtag @mention $100 50% a&b ~tilde~ `code` \\back/slash",
    "“smart quotes” — dashes… ellipsis",
    "<|startoftext|>inside text<|endoftext|>",
    "a\u0000nul and bell\u0007",
    "masterpiece, best quality, ultra-detailed, 8k, photorealistic, trending on artstation",
    LONG,
    " ".join(["cat"] * 75),
    " ".join(["cat"] * 76),
    ("dragon " * 80).strip(),
]


def dumps(obj) -> bytes:
    """Canonical JSON (sorted keys, two-space indent, ASCII), with number arrays on one line."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True)
    text = re.sub(
        r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    return (text + "\n").encode()


def floats(array) -> list[float]:
    """float32 values as exact decimal float64 (shortest repr that round-trips)."""
    return [float(v) for v in np.asarray(array, dtype=np.float32).reshape(-1)]


def fake_model(sample: np.ndarray, t: float) -> np.ndarray:
    """A deterministic stand-in for the UNet: depends on the sample, the timestep and position."""
    k = np.arange(sample.size, dtype=np.float64).reshape(sample.shape)
    return (0.9 * sample.astype(np.float64) + 0.1 * np.cos(t / 100.0 + k)).astype(np.float32)


def run(name: str, config: dict, steps: int) -> dict:
    import torch

    sched = schedulers.make(name, config)
    sched.set_timesteps(steps)

    init_sigma = float(sched.init_noise_sigma)
    x = torch.from_numpy(noise.latents(SEED, LATENT_SHAPE)) * sched.init_noise_sigma
    out = {
        "scheduler": name,
        "steps": steps,
        "timesteps": [float(t) for t in sched.timesteps],
        "init_noise_sigma": init_sigma,
        "initial_sample": floats(x),
        "records": [],
    }
    if name in ("euler", "euler-a", "dpm++"):
        out["sigmas"] = floats(sched.sigmas)
    with schedulers.spec_step_noise(sched, SEED):
        for t in sched.timesteps:
            scaled = sched.scale_model_input(x, t)
            model_output = torch.from_numpy(fake_model(scaled.numpy(), float(t)))
            x = sched.step(model_output, t, x, return_dict=False)[0].to(torch.float32)
            out["records"].append(
                {
                    "t": float(t),
                    "scaled": floats(scaled),
                    "model_output": floats(model_output),
                    "prev_sample": floats(x),
                }
            )
    return out


def scheduler_vectors() -> dict:
    cases = []
    for config_name, config, step_counts in CONFIGS:
        for steps in step_counts:
            for name in schedulers.NAMES:
                cases.append(
                    {"config_name": config_name, "config": config, **run(name, config, steps)}
                )
    return {
        "about": "diffusers scheduler runs (see make_runtime_vectors.py); latents from the spec's noise "
        "generator, model outputs from a fixed fake model, euler-a step noise from stream i + 1",
        "diffusers": __import__("diffusers").__version__,
        "latent_shape": list(LATENT_SHAPE),
        "seed": str(SEED),
        "cases": cases,
    }


def token_ids(ids: list[int]) -> list[int]:
    """packer/runtime/generate.py's rule: truncate keeping the final end token, then pad."""
    if len(ids) > MAX_LENGTH:
        ids = ids[: MAX_LENGTH - 1] + ids[-1:]
    return ids + [PAD_ID] * (MAX_LENGTH - len(ids))


def tokenizer_vectors() -> dict:
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    cases = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        cases.append({"text": text, "ids": ids, "input_ids": token_ids(ids)})
    return {
        "tokenizer": "bundle/tokenizer/tokenizer.json",
        "tokenizers": tokenizers.__version__,
        "max_length": MAX_LENGTH,
        "pad_token_id": PAD_ID,
        "cases": cases,
    }


def close(a, b, tol: float = 1e-5) -> bool:
    """Same structure, the same strings, ints and keys, floats within ``tol`` (relative to the
    larger magnitude, absolute below 1). torch's float32 CPU kernels round differently by an
    ulp from one CPU to another, which a few scheduler steps grow to ~2e-6 (measured between
    an Intel and an AMD machine); the runtime's tests compare against these vectors at 1e-5."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and abs(a - b) <= tol * max(1.0, abs(a), abs(b))
        )
    return a == b


def generate() -> dict[str, bytes]:
    return {
        "schedulers.json": dumps(scheduler_vectors()),
        "tokenizer_cases.json": dumps(tokenizer_vectors()),
    }


if __name__ == "__main__":
    files = generate()
    if "--check" in sys.argv:
        diff = [
            n
            for n, data in files.items()
            if not (HERE / n).is_file()
            or not close(json.loads((HERE / n).read_bytes()), json.loads(data))
        ]
        print("runtime vectors up to date" if not diff else "differ: " + ", ".join(diff))
        sys.exit(1 if diff else 0)
    for n, data in files.items():
        (HERE / n).write_bytes(data)
    print(f"wrote {', '.join(files)} in {HERE}")

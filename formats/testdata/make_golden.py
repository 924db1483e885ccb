"""Regenerate the golden vectors in formats/testdata/ (both implementations test against them).

    python formats/testdata/make_golden.py [--check]

Writes ``bundle/`` (a tiny bundle: two components, several zstd shards with and without
byte-plane shuffle, a tokenizer), ``expected.json`` (hashes and decoded-tensor checksums) and
``noise.json`` (Philox known answers, uint32 streams and normals for a few seeds). ``--check``
regenerates into a temporary folder and fails if anything differs from what is committed.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from examples import tiny_tokenizer  # noqa: E402
from packer.bundle import Bundle, BundleWriter  # noqa: E402
from packer.bundle.manifest import generator_info  # noqa: E402
from packer.runtime import noise  # noqa: E402
from packer.support import canonical  # noqa: E402

SEEDS = [0, 1, 42, 2**32 + 7, 2**64 - 1]
KAT = [  # Random123 known-answer tests for philox4x32-10
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


def golden_params(rng: np.random.Generator) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Small weights whose statistics look trained (mostly small values, a few large)."""

    def w(*shape, dtype="float16"):
        return (rng.standard_normal(shape) * rng.choice([0.02, 0.2], size=shape)).astype(dtype)

    return {
        "text_encoder": [
            ("embeddings.token_embedding.weight", w(40, 8)),
            ("final_layer_norm.weight", np.ones(8, "float32")),
            ("final_layer_norm.bias", np.zeros(8, "float32")),
        ],
        "unet": [
            ("conv_in.weight", w(8, 4, 3, 3)),
            ("conv_in.bias", w(8)),
            ("down_blocks.0.attentions.0.proj_in.weight", w(8, 8, 1, 1)),
            ("mid_block.resnets.0.conv1.weight", w(16, 8, 3, 3)),
            ("conv_out.weight", w(4, 8, 3, 3, dtype="float32")),
            ("conv_out.bias", w(4, dtype="float32")),
        ],
    }


def manifest_fields(index: dict[str, tuple[str, list[str]]]) -> dict:
    return {
        "model": {"id": "sdpack/golden", "version": "1.0.0", "license": "apache-2.0"},
        "source": {
            "name": "golden",
            "format": "synthetic",
            "sha256": canonical.sha256_bytes(b"golden"),
        },
        "architecture": {
            "family": "sd1",
            "signature": canonical.sha256_bytes(b"golden-architecture"),
            "prediction_type": "epsilon",
            "configs": {"unet": {"in_channels": 4}, "text_encoder": {"hidden_size": 8}},
            "latent": {
                "channels": 4,
                "height": 8,
                "width": 8,
                "scaling_factor": 0.18215,
                "vae_scale": 8,
            },
        },
        "dtype": "float16",
        "components": {
            "text_encoder": {
                "weights": index["text_encoder"][0],
                "params": index["text_encoder"][1],
                "inputs": [{"name": "input_ids", "shape": [1, 77], "dtype": "int32"}],
            },
            "unet": {
                "weights": index["unet"][0],
                "params": index["unet"][1],
                "inputs": [{"name": "sample", "shape": [2, 4, 8, 8], "dtype": "float16"}],
            },
        },
        "targets": {},
        "tokenizer": {
            "files": ["tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"],
            "max_length": 77,
            "bos_token_id": 689,
            "eos_token_id": 690,
            "pad_token_id": 690,
        },
        "scheduler": {
            "default": "dpm++",
            "steps": 20,
            "guidance": 7.5,
            "config": {"num_train_timesteps": 1000},
        },
        "noise": {"generator": noise.GENERATOR, "version": noise.VERSION},
        "generator": {
            **generator_info("golden"),
            "sdpack": "golden",
            "apache_tvm": "golden",
            "tvm_ffi": "golden",
        },
    }


def write_bundle(out: Path) -> dict:
    rng = np.random.default_rng(20261122)
    tok_dir = tiny_tokenizer.save(Path(tempfile.mkdtemp()))
    with BundleWriter(out, shard_bytes=2048) as w:
        index = {name: w.add_weights(name, params) for name, params in golden_params(rng).items()}
        for f in ("tokenizer.json", "tokenizer_config.json"):
            w.add_file(f"tokenizer/{f}", tok_dir / f)
        doc = w.commit(manifest_fields(index))
    shutil.rmtree(tok_dir)
    return doc


def expected(bundle_dir: Path) -> dict:
    b = Bundle.open(bundle_dir)
    tensors = {}
    for comp in b.manifest["components"]:
        for name, arr in b.load_params(comp).items():
            tensors[f"{comp}/{name}"] = {
                "dtype": str(arr.dtype),
                "shape": list(arr.shape),
                "sha256": canonical.sha256_bytes(arr.tobytes()),
                "sum": float(arr.astype(np.float64).sum()),
            }
    return {
        "manifest_sha256": canonical.sha256_bytes((bundle_dir / "manifest.json").read_bytes()),
        "files": {f["path"]: f["sha256"] for f in b.manifest["files"]},
        "tensors": tensors,
    }


def noise_vectors() -> dict:
    streams, normals, latents = [], [], []
    for seed in SEEDS:
        streams.append(
            {"seed": str(seed), "uint32": noise.uint32_stream(seed, 4).reshape(-1).tolist()}
        )
        values = noise.standard_normal(seed, 19)
        normals.append(
            {
                "seed": str(seed),
                "count": 19,
                "values": [float(v) for v in values],
                "float32_bits": values.view(np.uint32).tolist(),
            }
        )
        lat = noise.latents(seed, (1, 4, 64, 64))
        latents.append(
            {
                "seed": str(seed),
                "shape": [1, 4, 64, 64],
                "sha256_float32_le": canonical.sha256_bytes(lat.astype("<f4").tobytes()),
                "sum": float(lat.astype(np.float64).sum()),
            }
        )
    for seed in SEEDS[:3]:
        values = noise.standard_normal(seed, 19, stream=3)
        normals.append(
            {
                "seed": str(seed),
                "stream": 3,
                "count": 19,
                "values": [float(v) for v in values],
                "float32_bits": values.view(np.uint32).tolist(),
            }
        )
    return {
        "generator": noise.GENERATOR,
        "version": noise.VERSION,
        "philox": [{"counter": c, "key": k, "output": o} for c, k, o in KAT],
        "streams": streams,
        "normals": normals,
        "latents": latents,
    }


def generate(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / "bundle").exists():
        shutil.rmtree(dest / "bundle")
    write_bundle(dest / "bundle")
    (dest / "expected.json").write_bytes(canonical.dumps(expected(dest / "bundle")))
    (dest / "noise.json").write_bytes(canonical.dumps(noise_vectors()))


def differences(committed: Path, fresh: Path) -> list[str]:
    """Paths this script generates that differ from (or are missing in / extra in) ``committed``."""
    files = lambda root: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    names = files(fresh) | {f"bundle/{n}" for n in files(committed / "bundle")}
    a, b = committed, fresh
    return sorted(
        n
        for n in names
        if not (
            (a / n).is_file() and (b / n).is_file() and filecmp.cmp(a / n, b / n, shallow=False)
        )
    )


if __name__ == "__main__":
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diff = differences(HERE, Path(tmp))
        print("golden vectors up to date" if not diff else "differ: " + ", ".join(diff))
        sys.exit(1 if diff else 0)
    generate(HERE)
    print(f"wrote {HERE}")

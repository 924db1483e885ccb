"""The hostile-input corpus: every entry point of the `packer` CLI fed something bad.

Each case is a small function ``case(w: World) -> (argv, exit code, substring)``: it writes one
bad input under ``w.tmp`` (a fresh folder per case), starting from the valid tiny example, and
says how `packer` must answer: the exit code (1: a bundle fails verification, 2: other bad input;
never 0, except for :func:`nan_weights`, which is a warning) and a substring of the one stderr
line. Destinations (``--out``, ``--to``, ``--lock-out``) are read from ``argv`` by the test.

Cases that could run code write their own marker check into ``w.markers`` (paths that must not
exist afterwards).
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from packer.support import canonical
from tests.helpers import file_entry, read_manifest, rehash, write_manifest

UNET = "model.diffusion_model."
CLIP = "cond_stage_model.transformer."
REPO = "sdpack/tiny"
LIB = "libs/llvm-float32/unet.so"
SHARD = "weights/unet/params_shard_0.bin.zst"
INDEX = "weights/unet/tensor-cache.json"
DEAD_ENDPOINT = (
    "http://127.0.0.1:9"  # nothing listens: a case that reaches the network fails loudly
)


@dataclass
class World:
    """What a case may start from. Everything but ``tmp`` is shared: copy before changing it."""

    tmp: Path  # this case's own folder
    example: dict  # make_example() paths: safetensors, ckpt, diffusers, tokenizer
    bundle: Path  # a valid packed bundle of the example: sdpack/tiny 1.0.0, llvm fp32
    hub: Path  # a directory hub holding that bundle as sdpack/tiny 1.0.0
    lock: Path  # a valid lock record for it
    markers: list[Path] = field(default_factory=list)

    # -- helpers for cases ------------------------------------------------------------------------
    @property
    def tok(self) -> list[str]:
        return ["--tokenizer", str(self.example["tokenizer"])]

    def ldm(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.example["safetensors"]))

    def save(self, tensors: dict, name: str = "bad.safetensors") -> Path:
        path = self.tmp / name
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        return path

    def pack(self, checkpoint: Path | str, *extra: str) -> list[str]:
        # llvm fp32 unless a case says otherwise (a later --targets/--dtype wins): no WebGPU builds here
        return [
            "pack",
            str(checkpoint),
            "--out",
            str(self.tmp / "out"),
            *self.tok,
            "--image-size",
            "64",
            "--targets",
            "llvm",
            "--dtype",
            "fp32",
            *extra,
        ]

    def copy_bundle(self) -> Path:
        return shutil.copytree(self.bundle, self.tmp / "bundle")

    def copy_hub(self) -> Path:
        return shutil.copytree(self.hub, self.tmp / "hub")

    def lock_with(self, **changes) -> Path:
        record = {**json.loads(self.lock.read_text()), **changes}
        record = {k: v for k, v in record.items() if v is not None}
        path = self.tmp / "bad.lock.json"
        path.write_text(json.dumps(record))
        return path


# -- helpers ------------------------------------------------------------------------------------
def split_safetensors(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def forge_safetensors(path: Path, header: dict, body: bytes, length: int | None = None) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + body)
    return path


def first_tensor(header: dict) -> str:
    """The tensor whose bytes start the data region."""
    return min(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )


def forge_hub_manifest(hub: Path, mutate) -> None:
    """Replace the manifest of sdpack/tiny's v1.0.0 commit in a directory hub by a mutated one."""
    repo = hub / REPO
    commit = (repo / "refs/tags/v1.0.0").read_text().strip()
    record_path = repo / "commits" / f"{commit}.json"
    record = json.loads(record_path.read_text())
    old = record["files"]["manifest.json"]["sha256"]
    doc = json.loads((repo / "objects" / old[:2] / old[2:]).read_bytes())
    mutate(doc)
    data = canonical.dumps(doc)
    sha = canonical.sha256_bytes(data)
    (repo / "objects" / sha[:2]).mkdir(exist_ok=True)
    (repo / "objects" / sha[:2] / sha[2:]).write_bytes(data)
    record["files"]["manifest.json"] = {"sha256": sha, "size": len(data)}
    record_path.write_bytes(canonical.dumps(record))


# == single-file checkpoints: forged safetensors ===================================================
def truncated_safetensors(w):
    data = w.example["safetensors"].read_bytes()
    (w.tmp / "cut.safetensors").write_bytes(data[: len(data) * 2 // 3])
    return w.pack(w.tmp / "cut.safetensors"), 2, "invalid safetensors header"


def header_length_past_eof(w):
    data = w.example["safetensors"].read_bytes()
    (w.tmp / "long.safetensors").write_bytes(struct.pack("<Q", len(data)) + data[8:])
    return w.pack(w.tmp / "long.safetensors"), 2, "exceeds the file"


def huge_header_length(w):
    data = w.example["safetensors"].read_bytes()
    (w.tmp / "huge.safetensors").write_bytes(struct.pack("<Q", 2**63 + 5) + data[8:])
    return w.pack(w.tmp / "huge.safetensors"), 2, "100 MB limit"


def header_lies_about_dtype(w):
    header, body = split_safetensors(w.example["safetensors"])
    name = first_tensor(header)
    header[name]["dtype"] = "F64" if header[name]["dtype"] != "F64" else "F32"
    forge_safetensors(w.tmp / "dtype.safetensors", header, body)
    return w.pack(w.tmp / "dtype.safetensors"), 2, "needs"


def header_lies_about_shape(w):
    header, body = split_safetensors(w.example["safetensors"])
    name = first_tensor(header)
    header[name]["shape"] = [d * 2 for d in header[name]["shape"]] or [2]
    forge_safetensors(w.tmp / "shape.safetensors", header, body)
    return w.pack(w.tmp / "shape.safetensors"), 2, "needs"


def header_offsets_past_data(w):
    header, body = split_safetensors(w.example["safetensors"])
    name = first_tensor(header)
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + len(body), end + len(body)]
    forge_safetensors(w.tmp / "offsets.safetensors", header, body)
    return w.pack(w.tmp / "offsets.safetensors"), 2, "outside the"


def overlapping_tensors(w):
    header, body = split_safetensors(w.example["safetensors"])
    last = max(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [0, end - begin]  # its bytes now alias the first tensor's
    forge_safetensors(w.tmp / "overlap.safetensors", header, body)
    return w.pack(w.tmp / "overlap.safetensors"), 2, "overlap"


def header_not_json(w):
    (w.tmp / "junk.safetensors").write_bytes(struct.pack("<Q", 6) + b"{nope}" + b"\0" * 16)
    return w.pack(w.tmp / "junk.safetensors"), 2, "invalid safetensors header"


def header_nesting_bomb(w):
    text = b"[" * 100_000 + b"]" * 100_000
    (w.tmp / "deep.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
    return w.pack(w.tmp / "deep.safetensors"), 2, "invalid safetensors header"


def empty_safetensors(w):
    forge_safetensors(w.tmp / "empty.safetensors", {"__metadata__": {}}, b"")
    return w.pack(w.tmp / "empty.safetensors"), 2, "holds no tensors"


# == single-file checkpoints: the wrong model ======================================================
def nan_weights(w):
    """NaN/Inf weights are a warning, not an error (weights.warn_non_finite): pack succeeds."""
    sd = w.ldm()
    key = UNET + "input_blocks.0.0.weight"
    sd[key] = sd[key].clone()
    sd[key].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    return (
        w.pack(w.save(sd, "nan.safetensors")),
        0,
        "warning: 1 weight tensor(s) contain NaN or Inf",
    )


def sd2_linear_proj_in(w):
    sd = {k: v[:, :, 0, 0] if k.startswith(UNET) and k.endswith((".proj_in.weight", ".proj_out.weight")) else v
          for k, v in w.ldm().items()}  # fmt: skip
    return (
        w.pack(w.save(sd)),
        2,
        "Stable Diffusion 2.x checkpoints are not supported (linear proj_in)",
    )


def sd2_openclip_keys(w):
    sd = {
        k.replace(CLIP, "cond_stage_model.model.") if k.startswith(CLIP) else k: v
        for k, v in w.ldm().items()
    }
    return w.pack(w.save(sd)), 2, "OpenCLIP"


def sdxl_like(w):
    sd = w.ldm()
    sd["conditioner.embedders.1.model.positional_embedding"] = torch.zeros(4, 4)
    sd[UNET + "label_emb.0.0.weight"] = torch.zeros(4, 4)
    return w.pack(w.save(sd)), 2, "SDXL checkpoints are not supported"


def inpainting_9_channels(w):
    sd = w.ldm()
    conv = sd[UNET + "input_blocks.0.0.weight"]
    sd[UNET + "input_blocks.0.0.weight"] = torch.cat([conv, conv, conv[:, :1]], dim=1)
    return w.pack(w.save(sd)), 2, "inpainting checkpoints (9-channel UNet)"


def vae_only(w):
    sd = {
        k.removeprefix("first_stage_model."): v
        for k, v in w.ldm().items()
        if k.startswith("first_stage_model.")
    }
    return w.pack(w.save(sd, "vae.safetensors")), 2, "a VAE-only file"


def lora_only(w):
    sd = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }
    return w.pack(w.save(sd, "lora.safetensors")), 2, "a LoRA file"


def missing_text_encoder(w):
    sd = {k: v for k, v in w.ldm().items() if not k.startswith(CLIP)}
    return w.pack(w.save(sd)), 2, "missing components: CLIP text encoder"


# == .ckpt pickles =================================================================================
class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def ckpt_runs_code(w):
    marker = w.tmp / "PWNED"
    w.markers.append(marker)
    sd = torch.load(w.example["ckpt"], weights_only=True)["state_dict"]
    sd["evil"] = _RunsCode(str(marker))
    torch.save({"state_dict": sd}, w.tmp / "evil.ckpt")
    return w.pack(w.tmp / "evil.ckpt"), 2, "not a plain-tensor PyTorch checkpoint (it refers to"


def ckpt_not_a_zip(w):
    (w.tmp / "garbage.ckpt").write_bytes(b"PK\x03\x04 truncated zip, then nothing" + b"\xff" * 64)
    return w.pack(w.tmp / "garbage.ckpt"), 2, "not a plain-tensor PyTorch checkpoint"


def ckpt_zip_bomb_member(w):
    """A storage record that inflates to 64 MiB where the pickle expects 16 bytes."""
    torch.save(
        {"state_dict": {"x": torch.zeros(4, dtype=torch.uint8).repeat(4)}}, w.tmp / "small.ckpt"
    )
    with (
        zipfile.ZipFile(w.tmp / "small.ckpt") as src,
        zipfile.ZipFile(w.tmp / "bomb.ckpt", "w") as out,
    ):
        for name in src.namelist():
            data = b"\0" * (64 << 20) if name.endswith("/data/0") else src.read(name)
            out.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    (w.tmp / "small.ckpt").unlink()
    return w.pack(w.tmp / "bomb.ckpt"), 2, "not a plain-tensor PyTorch checkpoint"


def ckpt_of_a_list(w):
    torch.save([torch.zeros(1)], w.tmp / "list.ckpt")
    return w.pack(w.tmp / "list.ckpt"), 2, "not a state dict"


# == other inputs ==================================================================================
def unknown_file_type(w):
    (w.tmp / "model.onnx").write_bytes(b"\0" * 64)
    return w.pack(w.tmp / "model.onnx"), 2, "unknown file type '.onnx'"


def folder_without_model_index(w):
    (w.tmp / "folder").mkdir()
    return w.pack(w.tmp / "folder"), 2, "a folder without model_index.json"


def diffusers_missing_unet(w):
    folder = shutil.copytree(w.example["diffusers"], w.tmp / "partial")
    shutil.rmtree(folder / "unet")
    return w.pack(folder), 2, "the diffusers folder has no unet/"


def diffusers_missing_tokenizer(w):
    folder = shutil.copytree(w.example["diffusers"], w.tmp / "partial")
    shutil.rmtree(folder / "tokenizer")
    return (
        ["pack", str(folder), "--out", str(w.tmp / "out")],
        2,
        "the diffusers folder has no tokenizer/",
    )


def diffusers_config_nesting_bomb(w):
    folder = shutil.copytree(w.example["diffusers"], w.tmp / "deep")
    (folder / "unet" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    return w.pack(folder), 2, "unet/config.json is not valid JSON"


def no_such_checkpoint(w):
    return w.pack(w.tmp / "missing.safetensors"), 2, "no such file or folder"


# == pack arguments ================================================================================
def bad_dtype(w):
    return w.pack(w.example["safetensors"], "--dtype", "fp8"), 2, "unknown --dtype 'fp8'"


def bad_targets(w):
    return w.pack(w.example["safetensors"], "--targets", "llvm,tpu"), 2, "unknown target(s) tpu"


def empty_targets(w):
    return w.pack(w.example["safetensors"], "--targets", ","), 2, "unknown target(s) (none)"


def bad_image_size(w):
    return (
        w.pack(w.example["safetensors"], "--image-size", "100"),
        2,
        "image size 100 is not a positive multiple",
    )


def negative_image_size(w):
    return w.pack(w.example["safetensors"], "--image-size", "-64"), 2, "image size -64"


def pack_bad_version(w):
    return w.pack(w.example["safetensors"], "--version", "1.0"), 2, "invalid version '1.0'"


def pack_bad_model_id(w):
    return w.pack(w.example["safetensors"], "--model-id", "../../etc"), 2, "invalid repo id"


def pack_bad_prediction_type(w):
    return (
        w.pack(w.example["safetensors"], "--prediction-type", "sample"),
        2,
        "unknown --prediction-type",
    )


def pack_out_exists(w):
    (w.tmp / "out").mkdir()
    (w.tmp / "out" / "precious.txt").write_text("keep me")
    return w.pack(w.example["safetensors"]), 2, "already exists"


# == verify: forged manifests ======================================================================
def _verify_manifest_case(mutate, expect):
    def case(w):
        root = w.copy_bundle()
        doc = read_manifest(root)
        mutate(doc)
        write_manifest(root, doc)
        return ["verify", str(root)], 1, expect

    return case


def _set_path(path):
    def mutate(doc):
        doc["files"][0]["path"] = path

    return mutate


verify_dotdot_path = _verify_manifest_case(_set_path("../../outside.bin"), "'..' segment")
verify_absolute_path = _verify_manifest_case(_set_path("/etc/passwd"), "is absolute")
verify_unknown_format_version = _verify_manifest_case(
    lambda d: d.update(format_version=99), "unknown format_version 99"
)
verify_huge_declared_size = _verify_manifest_case(
    lambda d: d["files"][0].update(size=2**34), "in the manifest"
)


def verify_huge_raw_size(w):
    root = w.copy_bundle()
    doc = read_manifest(root)
    file_entry(doc, SHARD)["encoding"]["raw_size"] = 2**32  # the schema's maximum: 4 GiB claimed
    write_manifest(root, doc)
    return ["verify", str(root)], 1, "zstd frame declares"


def verify_hash_mismatch(w):
    root = w.copy_bundle()
    data = bytearray((root / LIB).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / LIB).write_bytes(bytes(data))
    return ["verify", str(root)], 1, f"{LIB}: sha256 mismatch"


def verify_manifest_nesting_bomb(w):
    root = w.copy_bundle()
    (root / "manifest.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    return ["verify", str(root)], 1, "manifest.json: not valid JSON"


def verify_index_nesting_bomb(w):
    root = w.copy_bundle()
    (root / INDEX).write_text("[" * 100_000 + "]" * 100_000)
    rehash(root, INDEX)
    return ["verify", str(root)], 1, f"{INDEX}: not valid JSON"


def verify_manifest_too_large(w):
    root = w.copy_bundle()
    (root / "manifest.json").write_bytes(b" " * (17 << 20))
    return ["verify", str(root)], 1, "too large for a manifest"


# == generate =======================================================================================
def generate_tampered_library(w):
    root = w.copy_bundle()
    lib = root / LIB
    data = bytearray(lib.read_bytes())
    data[-100] ^= 0x01  # a library that is not the one the manifest pins must never be loaded
    lib.write_bytes(bytes(data))
    return (
        [
            "generate",
            str(root),
            "--prompt",
            "a castle",
            "--steps",
            "1",
            "--out",
            str(w.tmp / "img.png"),
        ],
        1,
        f"{LIB}: sha256 mismatch",
    )


def generate_tampered_weights(w):
    root = w.copy_bundle()
    (root / SHARD).write_bytes((root / SHARD).read_bytes()[:-16])
    rehash(root, SHARD)  # even a consistent manifest entry: the frame no longer decodes
    return (
        [
            "generate",
            str(root),
            "--prompt",
            "a castle",
            "--steps",
            "1",
            "--out",
            str(w.tmp / "img.png"),
        ],
        1,
        SHARD,
    )


def generate_bad_scheduler(w):
    return (
        [
            "generate",
            str(w.bundle),
            "--prompt",
            "x",
            "--scheduler",
            "plms",
            "--out",
            str(w.tmp / "img.png"),
        ],
        2,
        "unknown scheduler 'plms'",
    )


# == publish ========================================================================================
def publish_bad_version(w):
    return (
        [
            "publish",
            REPO,
            "--bundle",
            str(w.bundle),
            "--version",
            "1.0.0.0",
            "--to",
            str(w.tmp / "hub"),
        ],
        2,
        "invalid version '1.0.0.0'",
    )


def publish_bad_repo_id(w):
    return (
        [
            "publish",
            "sdpack/../evil",
            "--bundle",
            str(w.bundle),
            "--version",
            "1.0.0",
            "--to",
            str(w.tmp / "hub"),
        ],
        2,
        "invalid repo id",
    )


def publish_tampered_bundle(w):
    root = w.copy_bundle()
    (root / SHARD).write_bytes(b"\0" + (root / SHARD).read_bytes()[1:])
    return (
        ["publish", REPO, "--bundle", str(root), "--version", "1.0.0", "--to", str(w.tmp / "hub")],
        1,
        f"{SHARD}: sha256 mismatch",
    )


def publish_tampered_bundle_to_hf(w):
    root = w.copy_bundle()
    doc = read_manifest(root)
    doc["files"][0]["path"] = "../x"
    write_manifest(root, doc)
    return (
        ["publish", REPO, "--bundle", str(root), "--version", "1.0.0", "--endpoint", DEAD_ENDPOINT],
        1,
        "'..' segment",
    )


def publish_name_mismatch(w):
    return (
        [
            "publish",
            "sdpack/other",
            "--bundle",
            str(w.bundle),
            "--version",
            "1.0.0",
            "--to",
            str(w.tmp / "hub"),
        ],
        2,
        "not sdpack/other 1.0.0",
    )


def publish_bad_checkpoint(w):
    (w.tmp / "cut.safetensors").write_bytes(w.example["safetensors"].read_bytes()[:1000])
    return ["publish", REPO, "--checkpoint", str(w.tmp / "cut.safetensors"), *w.tok, "--version", "1.0.0",
            "--to", str(w.tmp / "hub")], 2, "invalid safetensors header"  # fmt: skip


def publish_checkpoint_and_bundle(w):
    return ["publish", REPO, "--checkpoint", str(w.example["safetensors"]), "--bundle", str(w.bundle),
            "--version", "1.0.0", "--to", str(w.tmp / "hub")], 2, "exactly one of --checkpoint or --bundle"  # fmt: skip


def publish_changed_content_same_version(w):
    hub = w.copy_hub()
    root = w.copy_bundle()
    doc = read_manifest(root)
    doc["scheduler"]["steps"] = 21  # another bundle claiming the published version
    write_manifest(root, doc)
    return (
        ["publish", REPO, "--bundle", str(root), "--version", "1.0.0", "--to", str(hub)],
        2,
        "already published with different content",
    )


# == resolve / pull: pins and lock records ===========================================================
def resolve_no_version(w):
    return ["resolve", REPO, "--endpoint", str(w.hub)], 2, "does not say which version"


def resolve_bad_version(w):
    return ["resolve", f"{REPO}@1.0", "--endpoint", str(w.hub)], 2, "invalid version '1.0'"


def resolve_bad_repo_id(w):
    return ["resolve", "sdpack--x/y@1.0.0", "--endpoint", str(w.hub)], 2, "invalid repo id"


def resolve_unpublished_version(w):
    return (
        [
            "resolve",
            f"{REPO}@9.9.9",
            "--endpoint",
            str(w.hub),
            "--lock-out",
            str(w.tmp / "lock.json"),
        ],
        2,
        "is not published",
    )


def resolve_lock_bad_sha(w):
    return (
        ["resolve", str(w.lock_with(manifest_sha256="0" * 64))],
        2,
        "differs from the lock record",
    )


def resolve_lock_wrong_schema(w):
    return ["resolve", str(w.lock_with(lock_version=2))], 2, "not a valid lock record"


def pull_lock_extra_field(w):
    return (
        ["pull", str(w.lock_with(token="hf_x")), "--out", str(w.tmp / "out")],
        2,
        "not a valid lock record",
    )


def pull_lock_not_json(w):
    (w.tmp / "bad.lock.json").write_text("{not json")
    return ["pull", str(w.tmp / "bad.lock.json"), "--out", str(w.tmp / "out")], 2, "not JSON"


def pull_lock_nesting_bomb(w):
    (w.tmp / "bad.lock.json").write_text("[" * 100_000 + "]" * 100_000)
    return ["pull", str(w.tmp / "bad.lock.json"), "--out", str(w.tmp / "out")], 2, "not JSON"


def pull_lock_bad_sha(w):
    return (
        ["pull", str(w.lock_with(manifest_sha256="f" * 64)), "--out", str(w.tmp / "out")],
        2,
        "differs from the lock record",
    )


def pull_lock_bad_commit(w):
    return (
        ["pull", str(w.lock_with(commit="0" * 39 + "g")), "--out", str(w.tmp / "out")],
        2,
        "not a valid lock record",
    )


def pull_lock_repo_mismatch(w):
    """The locked commit exists under another repo name, but its manifest says sdpack/tiny."""
    hub = w.copy_hub()
    shutil.copytree(hub / REPO, hub / "evil" / "copy")
    lock = w.lock_with(repo="evil/copy", endpoint=str(hub))
    return (
        ["pull", str(lock), "--out", str(w.tmp / "out")],
        2,
        "resolves to a manifest for sdpack/tiny",
    )


def pull_lock_endpoint_missing(w):
    return (
        ["pull", str(w.lock_with(endpoint=str(w.tmp / "gone"))), "--out", str(w.tmp / "out")],
        2,
        "neither an http(s) URL nor a hub directory",
    )


def pull_hash_mismatch(w):
    hub = w.copy_hub()
    objects = [
        p for p in (hub / REPO / "objects").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20
    ]
    for obj in objects:  # every large object (libraries, shards): one byte changed
        data = bytearray(obj.read_bytes())
        data[7] ^= 0x10
        obj.write_bytes(bytes(data))
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        1,
        "sha256 mismatch",
    )


def pull_manifest_dotdot(w):
    hub = w.copy_hub()
    forge_hub_manifest(hub, lambda d: d["files"][0].update(path="../../../tmp/evil.so"))
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        1,
        "'..' segment",
    )


def pull_manifest_absolute(w):
    hub = w.copy_hub()
    forge_hub_manifest(hub, lambda d: d["files"][0].update(path="/tmp/evil.so"))
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        1,
        "is absolute",
    )


def pull_manifest_unknown_format(w):
    hub = w.copy_hub()
    forge_hub_manifest(hub, lambda d: d.update(format_version=2))
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        1,
        "unknown format_version 2",
    )


def pull_manifest_huge_size(w):
    hub = w.copy_hub()
    forge_hub_manifest(hub, lambda d: d["files"][0].update(size=2**34))
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        1,
        "in the manifest",
    )


def pull_manifest_wrong_version(w):
    hub = w.copy_hub()
    forge_hub_manifest(hub, lambda d: d["model"].update(version="6.6.6"))
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        2,
        "resolves to a manifest for sdpack/tiny 6.6.6",
    )


def pull_commit_record_damaged(w):
    hub = w.copy_hub()
    commit = (hub / REPO / "refs/tags/v1.0.0").read_text().strip()
    (hub / REPO / "commits" / f"{commit}.json").write_text('{"files": [1, 2]}')
    return (
        ["pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(w.tmp / "out")],
        2,
        "is unreadable",
    )


def pull_out_exists(w):
    (w.tmp / "out").mkdir()
    return ["pull", str(w.lock), "--out", str(w.tmp / "out")], 2, "already exists"


CASES = [
    truncated_safetensors, header_length_past_eof, huge_header_length, header_lies_about_dtype,
    header_lies_about_shape, header_offsets_past_data, overlapping_tensors, header_not_json, header_nesting_bomb,
    empty_safetensors, nan_weights, sd2_linear_proj_in, sd2_openclip_keys, sdxl_like, inpainting_9_channels,
    vae_only, lora_only, missing_text_encoder, ckpt_runs_code, ckpt_not_a_zip, ckpt_zip_bomb_member, ckpt_of_a_list,
    unknown_file_type, folder_without_model_index, diffusers_missing_unet, diffusers_missing_tokenizer,
    diffusers_config_nesting_bomb, no_such_checkpoint, bad_dtype, bad_targets, empty_targets, bad_image_size,
    negative_image_size, pack_bad_version, pack_bad_model_id, pack_bad_prediction_type, pack_out_exists,
    verify_dotdot_path, verify_absolute_path, verify_unknown_format_version, verify_huge_declared_size,
    verify_huge_raw_size, verify_hash_mismatch, verify_manifest_nesting_bomb, verify_index_nesting_bomb,
    verify_manifest_too_large, generate_tampered_library, generate_tampered_weights, generate_bad_scheduler,
    publish_bad_version, publish_bad_repo_id, publish_tampered_bundle, publish_tampered_bundle_to_hf,
    publish_name_mismatch, publish_bad_checkpoint, publish_checkpoint_and_bundle, publish_changed_content_same_version,
    resolve_no_version, resolve_bad_version, resolve_bad_repo_id, resolve_unpublished_version, resolve_lock_bad_sha,
    resolve_lock_wrong_schema, pull_lock_extra_field, pull_lock_not_json, pull_lock_nesting_bomb, pull_lock_bad_sha,
    pull_lock_bad_commit, pull_lock_repo_mismatch, pull_lock_endpoint_missing, pull_hash_mismatch,
    pull_manifest_dotdot, pull_manifest_absolute, pull_manifest_unknown_format, pull_manifest_huge_size,
    pull_manifest_wrong_version, pull_commit_record_damaged, pull_out_exists,
]  # fmt: skip

for _name, _fn in list(globals().items()):
    if _name.startswith(("verify_",)) and callable(_fn) and getattr(_fn, "__name__", "") == "case":
        _fn.__name__ = _name


def destinations(argv: list[str]) -> list[Path]:
    """The paths a command would write: the values of --out, --to and --lock-out."""
    return [
        Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in ("--out", "--to", "--lock-out")
    ]

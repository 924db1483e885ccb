"""`packer pack CHECKPOINT --out DIR`: ingest → compile (cached by signature) → bundle."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer.errors import CompileError, UsageError
from packer.support import canonical, names, native_log, progress

DTYPES = {"fp16": "float16", "float16": "float16", "fp32": "float32", "float32": "float32"}
MANIFEST_COMPONENTS = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae_decoder"}
DEFAULT_LICENSE = "creativeml-openrail-m"  # SD1.5's license, which SD1.5 derivatives carry on
DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # where SD1.5 lives on the Hub now


@dataclass
class PackArgs:
    """What to pack and how. ``targets``/``dtype`` None: the default variants
    (:mod:`packer.compile.variants`); ``license``/``base_model`` None: from the source when it
    says (a Hub id's card and id), else :data:`DEFAULT_LICENSE` / :data:`DEFAULT_BASE_MODEL`."""

    checkpoint: str
    out: Path
    targets: list[str] | None = None
    dtype: str | None = None
    version: str = "0.1.0"
    model_id: str | None = None
    license: str | None = None
    base_model: str | None = None
    tokenizer: Path | None = None
    prediction_type: str | None = None
    image_size: int | None = None
    shard_mb: int = 32
    overwrite: bool = False
    quantize: str | None = None  # a scheme of packer.bundle.quantize.SCHEMES

    def checked(self) -> PackArgs:
        """Validate arguments before any work is done (no partial output on bad input)."""
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"unknown --dtype {self.dtype!r}", "use fp16 or fp32, or leave it out for each target's own")
        self.version = names.check_version(self.version)
        if self.model_id is not None:
            names.check_repo_id(self.model_id)
        if self.base_model is not None:
            try:
                names.check_repo_id(self.base_model)
            except UsageError as exc:
                raise UsageError(f"--base-model {self.base_model!r} is not a Hub repo id", exc.hint) from None
        from packer.compile import targets as target_registry

        unknown = [t for t in self.targets or [] if t not in target_registry.TARGETS]
        if unknown or self.targets == []:
            raise UsageError(f"unknown target(s) {', '.join(unknown) or '(none)'}",
                             f"choose from {', '.join(sorted(target_registry.TARGETS))}")
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise UsageError(f"unknown --prediction-type {self.prediction_type!r}", "use epsilon or v_prediction")
        if self.quantize is not None:
            from packer.bundle.quantize import get_scheme

            get_scheme(self.quantize)
        if not 1 <= self.shard_mb <= 1024:
            raise UsageError(f"--shard-mb {self.shard_mb} is out of range", "use a size between 1 and 1024 MiB (default 32)")
        return self


@dataclass
class PackResult:
    out: Path
    manifest: dict
    compiled: int
    reused: int

    def display(self) -> str:
        m = self.manifest
        size = sum(f["size"] for f in m["files"])
        return (f"packed {m['model']['id']} {m['model']['version']} → {self.out} "
                f"({len(m['files'])} files, {size / 2**20:.1f} MiB; targets {', '.join(sorted(m['targets']))}; "
                f"libraries: {self.compiled} compiled, {self.reused} reused)")

    def as_json(self) -> dict:
        m = self.manifest
        return {"command": "pack", "out": str(self.out), "repo": m["model"]["id"], "version": m["model"]["version"],
                "targets": sorted(m["targets"]), "files": len(m["files"]), "bytes": sum(f["size"] for f in m["files"]),
                "manifest_sha256": canonical.sha256_file(self.out / "manifest.json"),
                "libraries": {"compiled": self.compiled, "reused": self.reused}}


def _model_id(checkpoint: str) -> str:
    stem = Path(checkpoint.split("@")[0]).name
    stem = re.sub(r"\.(safetensors|ckpt|pt|pth)$", "", stem)
    return "local/" + (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model")


def model_fields(args: PackArgs, ckpt) -> dict:
    """The manifest's ``model``: what the user said, else what the source says, else the defaults.

    ``base_model`` is ``--base-model``, else the Hub id the checkpoint came from (the bundle is
    that model), else :data:`DEFAULT_BASE_MODEL`; ``license`` is ``--license``, else the source's
    model card's, else :data:`DEFAULT_LICENSE`.
    """
    hub_id = ckpt.source["name"] if ckpt.source.get("format") == "hub" else None
    return {"id": args.model_id or _model_id(args.checkpoint), "version": args.version,
            "license": args.license or ckpt.license or DEFAULT_LICENSE,
            "base_model": args.base_model or hub_id or DEFAULT_BASE_MODEL}


def _params(ckpt, compiled, dtype: str, scheme=None) -> list[tuple[str, np.ndarray]]:
    """The component's params as stored, in the library's order: floats in ``dtype``; each weight
    the library takes quantized as its packed codes and scales (``scheme``), quantized from the
    ``dtype`` values an unquantized bundle would store."""
    state = ckpt.state_dicts[compiled.param_source]
    stored: dict[str, np.ndarray] = {}
    if compiled.quantized:
        from packer.bundle.quantize import quantize, stored_names

        for key in compiled.quantized:
            packed, scales = quantize(state[key].detach().cpu().numpy().astype(dtype), scheme)
            stored.update(zip(stored_names(key), (packed, scales)))
    out = []
    for key in compiled.params:
        if key in stored:
            out.append((key, stored.pop(key)))
            continue
        arr = state[key].detach().cpu().numpy()
        if arr.dtype.kind == "f":
            arr = arr.astype(dtype)
        out.append((key, np.ascontiguousarray(arr)))
    return out


def pack(args: PackArgs) -> PackResult:
    """Turn a checkpoint into a bundle at ``args.out``; nothing is written if anything fails."""
    from packer.bundle import BundleWriter
    from packer.bundle.writer import generator_info
    from packer.compile import PIPELINE_VERSION, compile_all, plan
    from packer.ingest import ingest
    from packer.runtime import noise

    args.checked()
    if args.out.exists() and not args.overwrite:
        raise UsageError(f"{args.out} already exists", "choose another --out or pass --overwrite")
    chosen = plan(args.targets, DTYPES[args.dtype] if args.dtype else None)
    dtype = chosen.weights_dtype
    scheme = None
    if args.quantize is not None:
        from packer.bundle.quantize import get_scheme

        scheme = get_scheme(args.quantize)
    progress.status(f"ingesting {args.checkpoint}")
    ckpt = ingest(args.checkpoint, tokenizer=args.tokenizer, prediction_type=args.prediction_type,
                  image_size=args.image_size)
    progress.status(f"compiling {chosen.display()} (libraries are reused when the architecture was built before)")
    with native_log.quiet("compile"):  # TVM's C++ warnings only with SDPACK_VERBOSE=1
        compiled = compile_all(ckpt, variants=[(v.target, v.dtype) for v in chosen.variants], quantize=scheme)
    by_component: dict[str, list] = {}
    for (component, _target, _dtype), cc in compiled.items():
        by_component.setdefault(component, []).append(cc)

    with BundleWriter(args.out, shard_bytes=args.shard_mb << 20, overwrite=args.overwrite) as writer:
        components = {}
        for component, ccs in by_component.items():
            first = ccs[0]
            if any(c.params != first.params for c in ccs):  # one weight layout serves every variant
                raise CompileError(f"targets disagree on the {component} parameter order",
                                   "pack these targets separately and report it as a bug")
            index, names = writer.add_weights(component, _params(ckpt, first, dtype, scheme))
            components[component] = {"weights": index, "params": names, "inputs": first.inputs, "outputs": first.outputs}
        targets = {}
        for variant in chosen.variants:
            for component in by_component:
                cc = compiled[(component, variant.target, variant.dtype)]
                rel = f"libs/{variant.key}/{component}{cc.lib_path.suffix}"
                writer.add_file(rel, cc.lib_path)
                entry = targets.setdefault(variant.key, {
                    "kind": cc.target_json["kind"], "dtype": variant.dtype, "target": cc.target_json, "libs": {},
                    "tuning_db_sha256": cc.tuning_db_sha256, "requirements": dict(cc.requirements),
                })
                entry["libs"][component] = rel
                _merge_requirements(entry["requirements"], cc.requirements)
        tok_files = []
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (ckpt.tokenizer_dir / name).is_file():
                writer.add_file(f"tokenizer/{name}", ckpt.tokenizer_dir / name)
                tok_files.append(f"tokenizer/{name}")
        fields = _manifest_fields(args, ckpt, components, targets, tok_files, dtype)
        if scheme is not None:
            fields["quantization"] = _quantization(scheme, ckpt, by_component)
        fields["generator"] = generator_info(PIPELINE_VERSION)
        fields["noise"] = {"generator": noise.GENERATOR, "version": noise.VERSION}
        doc = writer.commit(fields)
    reused = sum(1 for c in compiled.values() if c.reused)
    return PackResult(args.out, doc, len(compiled) - reused, reused)


def _quantization(scheme, ckpt, by_component: dict) -> dict:
    """The manifest's ``quantization``: the scheme and each component's quantized weights."""
    from packer.bundle.quantize import manifest_entry

    tensors = {}
    for component, ccs in by_component.items():
        state = ckpt.state_dicts[ccs[0].param_source]
        if ccs[0].quantized:
            tensors[component] = [(key, list(state[key].shape)) for key in ccs[0].quantized]
    return manifest_entry(scheme, tensors)


def _merge_requirements(into: dict, more: dict) -> None:
    """A target's requirements cover all its libraries: union of features, largest buffer."""
    for key, value in more.items():
        if key == "features":
            into["features"] = list(dict.fromkeys([*into.get("features", []), *value]))
        elif key in ("max_buffer_bytes", "estimated_memory_bytes"):
            into[key] = max(int(into.get(key, 0)), int(value))
        else:
            into.setdefault(key, value)


def _clean(config: dict) -> dict:
    """A config without private keys (``_name_or_path`` and the like would leak machine paths)."""
    return {k: v for k, v in sorted(config.items()) if not k.startswith("_")}


def _manifest_fields(args, ckpt, components, targets, tok_files, dtype) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ckpt.tokenizer_dir / "tokenizer.json"))
    vocab = tok.get_vocab()
    eos = vocab.get("<|endoftext|>")
    bos = vocab.get("<|startoftext|>")
    unet, vae = ckpt.configs["unet"], ckpt.configs["vae"]
    vae_scale = 2 ** (len(vae["block_out_channels"]) - 1)
    sample = unet["sample_size"]
    latent = {"channels": unet["in_channels"], "height": sample, "width": sample,
              "scaling_factor": vae.get("scaling_factor", 0.18215), "vae_scale": vae_scale}
    sig = canonical.sha256_bytes(canonical.dumps({"configs": ckpt.signature_configs(), "latent": latent, "dtype": dtype}))
    tokenizer = {"files": tok_files, "max_length": 77}
    tokenizer.update({k: v for k, v in (("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", eos)) if v is not None})
    model = model_fields(args, ckpt)
    return {
        "model": model,
        "source": ckpt.source,
        "architecture": {"family": "sd1", "signature": sig, "prediction_type": ckpt.prediction_type,
                         "configs": {k: _clean(v) for k, v in ckpt.configs.items()}, "latent": latent},
        "dtype": dtype,
        "components": components,
        "targets": targets,
        "tokenizer": tokenizer,
        "scheduler": {"default": "dpm++", "steps": 20, "guidance": 7.5,
                      "config": {**ckpt.scheduler_config, "prediction_type": ckpt.prediction_type}},
    }

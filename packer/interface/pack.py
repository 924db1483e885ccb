"""`packer pack CHECKPOINT --out DIR`: ingest → compile (cached by signature) → bundle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer.errors import CompileError, UsageError
from packer.support import canonical, names, native_log, progress, spec

DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}  # --dtype spellings


@dataclass
class PackArgs:
    """What to pack and how. ``targets``/``dtype`` None: the default variants
    (:mod:`packer.compile.variants`); ``license``/``base_model`` None: from the source when it
    says (a Hub id's card and id), else the defaults of :func:`packer.bundle.manifest.model_fields`."""

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
            raise UsageError(
                f"unknown --dtype {self.dtype!r}",
                "use fp16 or fp32, or leave it out for each target's own",
            )
        self.version = names.check_version(self.version)
        if self.model_id is not None:
            names.check_repo_id(self.model_id)
        if self.base_model is not None:
            try:
                names.check_repo_id(self.base_model)
            except UsageError as exc:
                raise UsageError(
                    f"--base-model {self.base_model!r} is not a Hub repo id", exc.hint
                ) from None
        from packer.compile import targets as target_registry

        unknown = [t for t in self.targets or [] if t not in target_registry.TARGETS]
        if unknown or self.targets == []:
            raise UsageError(
                f"unknown target(s) {', '.join(unknown) or '(none)'}",
                f"choose from {', '.join(sorted(target_registry.TARGETS))}",
            )
        if self.prediction_type is not None and self.prediction_type not in spec.PREDICTION_TYPES:
            raise UsageError(
                f"unknown --prediction-type {self.prediction_type!r}", "use epsilon or v_prediction"
            )
        if self.quantize is not None:
            from packer.bundle.quantize import get_scheme

            get_scheme(self.quantize)
        if not 1 <= self.shard_mb <= 1024:
            raise UsageError(
                f"--shard-mb {self.shard_mb} is out of range",
                "use a size between 1 and 1024 MiB (default 32)",
            )
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
        return (
            f"packed {m['model']['id']} {m['model']['version']} → {self.out} "
            f"({len(m['files'])} files, {size / 2**20:.1f} MiB; targets {', '.join(sorted(m['targets']))}; "
            f"libraries: {self.compiled} compiled, {self.reused} reused)"
        )

    def as_json(self) -> dict:
        m = self.manifest
        return {
            "command": "pack",
            "out": str(self.out),
            "repo": m["model"]["id"],
            "version": m["model"]["version"],
            "targets": sorted(m["targets"]),
            "files": len(m["files"]),
            "bytes": sum(f["size"] for f in m["files"]),
            "manifest_sha256": canonical.sha256_file(self.out / "manifest.json"),
            "libraries": {"compiled": self.compiled, "reused": self.reused},
        }


def _params(ckpt, compiled, dtype: str, scheme=None) -> Iterator[tuple[str, np.ndarray]]:
    """The component's params as stored, in the library's order, one at a time (the writer
    streams them into shards): floats in ``dtype``; each weight the library takes quantized as its
    packed codes and scales (``scheme``), quantized from the ``dtype`` values an unquantized
    bundle would store."""
    state = ckpt.state_dicts[compiled.param_source]
    source_of: dict[str, str] = {}  # stored name of a quantized weight -> its state-dict key
    if compiled.quantized:
        from packer.bundle.quantize import quantize, stored_names

        source_of = {name: key for key in compiled.quantized for name in stored_names(key)}
    ready: dict[str, np.ndarray] = {}
    for key in compiled.params:
        if key in source_of:
            if key not in ready:
                source = source_of[key]
                weight = state[source].detach().cpu().numpy().astype(dtype)
                ready.update(zip(stored_names(source), quantize(weight, scheme), strict=True))
            yield key, ready.pop(key)
            continue
        arr = state[key].detach().cpu().numpy()
        if arr.dtype.kind == "f":
            arr = arr.astype(dtype)
        yield key, np.ascontiguousarray(arr)


def _raw_bytes(ckpt, compiled, dtype: str) -> int | None:
    """The unquantized params' stored size (for the progress bar), or None when quantized."""
    if compiled.quantized:
        return None
    state = ckpt.state_dicts[compiled.param_source]
    size = np.dtype(dtype).itemsize
    return sum(
        state[k].numel() * (size if state[k].is_floating_point() else state[k].element_size())
        for k in compiled.params
    )


def pack(args: PackArgs) -> PackResult:
    """Turn a checkpoint into a bundle at ``args.out``; nothing is written if anything fails."""
    from packer.bundle import BundleWriter, manifest
    from packer.compile import PIPELINE_VERSION, compile_all, plan
    from packer.ingest import ingest

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
    ckpt = ingest(
        args.checkpoint,
        tokenizer=args.tokenizer,
        prediction_type=args.prediction_type,
        image_size=args.image_size,
    )
    progress.status(
        f"compiling {chosen.display()} (libraries are reused when the architecture was built before)"
    )
    with native_log.quiet("compile"):  # TVM's C++ warnings only with SDPACK_VERBOSE=1
        compiled = compile_all(
            ckpt, variants=[(v.target, v.dtype) for v in chosen.variants], quantize=scheme
        )
    by_component: dict[str, list] = {}
    for (component, _target, _dtype), cc in compiled.items():
        by_component.setdefault(component, []).append(cc)

    with BundleWriter(
        args.out, shard_bytes=args.shard_mb << 20, overwrite=args.overwrite
    ) as writer:
        components = {}
        for component, ccs in by_component.items():
            first = ccs[0]
            if any(c.params != first.params for c in ccs):  # one weight layout serves every variant
                raise CompileError(
                    f"targets disagree on the {component} parameter order",
                    "pack these targets separately and report it as a bug",
                )
            index, params = writer.add_weights(
                component,
                _params(ckpt, first, dtype, scheme),
                total_bytes=_raw_bytes(ckpt, first, dtype),
            )
            components[component] = manifest.component_entry(index, params, first)
        targets: dict = {}
        for variant in chosen.variants:
            for component in by_component:
                cc = compiled[(component, variant.target, variant.dtype)]
                rel = f"libs/{variant.key}/{component}{cc.lib_path.suffix}"
                writer.add_file(rel, cc.lib_path)
                manifest.add_library(targets, variant.key, variant.dtype, component, rel, cc)
        tok_files = []
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (ckpt.tokenizer_dir / name).is_file():
                writer.add_file(f"tokenizer/{name}", ckpt.tokenizer_dir / name)
                tok_files.append(f"tokenizer/{name}")
        model = manifest.model_fields(
            ckpt,
            checkpoint=args.checkpoint,
            version=args.version,
            model_id=args.model_id,
            license=args.license,
            base_model=args.base_model,
        )
        fields = manifest.fields(
            ckpt,
            model=model,
            components=components,
            targets=targets,
            tokenizer_files=tok_files,
            dtype=dtype,
            pipeline_version=PIPELINE_VERSION,
        )
        if scheme is not None:
            fields["quantization"] = _quantization(scheme, ckpt, by_component)
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

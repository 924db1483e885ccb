"""Compile one component for one target and dtype, through the library cache.

The cache is consulted before anything touches the model: the signature is computed from the
architecture alone, and a hit returns the stored params/inputs/outputs, so a second checkpoint
of a known architecture costs neither a ``torch.export`` nor a build.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..errors import CompileError, SdpackError, UsageError
from ..support import progress
from ..support.canonical import dumps, sha256_bytes
from ..support.spec import COMPONENTS, WEIGHT_DTYPES
from . import cuda_stub, pipeline, tuning
from .cache import LibraryCache, cache_root
from .export import SPECS, TEXT_LENGTH, UNET_BATCH, ExportedComponent, export_component
from .quantize import QUANTIZED_COMPONENTS, decode_weights
from .targets import TargetSpec, get_target
from .worker import build_in_subprocess

DTYPES = WEIGHT_DTYPES  # a variant computes in one of the dtypes weights are stored in


@dataclass
class CompiledComponent:
    """A compiled library in the cache and everything needed to call it."""

    component: str
    target: str
    dtype: str
    lib_path: Path
    params: list[str]
    param_source: str
    inputs: list[dict]
    outputs: list[dict]
    signature: str
    tuning_db_sha256: str | None
    target_json: dict
    requirements: dict = field(default_factory=dict)  # manifest "requirements" (e.g. cuda arch)
    reused: bool = False  # True when the library came from the cache (no export, no build)
    quantized: list[str] = field(default_factory=list)  # weights taken as (packed, scales) params


def architecture_signature(
    signature_configs: dict,
    *,
    component: str,
    latent_hw,
    dtype: str,
    target_json: dict,
    tuning_db_sha256: str | None = None,
    quantization: dict | None = None,
) -> str:
    """sha256 of everything that determines the compiled code, and nothing else.

    The key holds the component's architecture configs (top-level keys starting with ``_``,
    such as ``_name_or_path``, are dropped: they name a checkpoint, not an architecture), the
    input shapes (fixed by ``latent_hw`` plus the 77-token prompt and the UNet's batch of 2),
    the dtype, the resolved target, the apache-tvm and tvm-ffi versions, ``PIPELINE_VERSION``
    and the tuning database's sha256; for a quantized build also the scheme (``quantization``:
    its name, bits and group size), absent otherwise so unquantized signatures stay as they were.

    >>> sig = architecture_signature({"hidden_size": 32}, component="text_encoder",
    ...     latent_hw=(8, 8), dtype="float32", target_json={"kind": "llvm"})
    >>> len(sig)
    64
    """
    key = _signature_key(
        signature_configs, component, latent_hw, dtype, target_json, tuning_db_sha256
    )
    if quantization is not None:
        key["quantization"] = quantization
    return sha256_bytes(dumps(key))


def _signature_key(configs, component, latent_hw, dtype, target_json, tuning_sha) -> dict:
    try:
        configs = json.loads(
            json.dumps({k: v for k, v in dict(configs).items() if not str(k).startswith("_")})
        )
    except (TypeError, ValueError) as exc:
        raise CompileError(
            f"{component} signature configs are not plain JSON: {exc}",
            "pass the architecture config as a dict of JSON values",
        ) from exc
    return {
        "component": component,
        "configs": configs,
        "inputs": {
            "latent_hw": [int(x) for x in latent_hw],
            "text_length": TEXT_LENGTH,
            "unet_batch": UNET_BATCH,
        },
        "dtype": dtype,
        "target": target_json,
        "versions": {name: metadata.version(name) for name in ("apache-tvm", "apache-tvm-ffi")},
        "pipeline": pipeline.PIPELINE_VERSION,
        "tuning_db_sha256": tuning_sha,
    }


class Compiler:
    """One cache root plus a memo of exports, so several targets/dtypes export once.

    ``quantize`` (a :class:`packer.bundle.quantize.Scheme`, or None): build the text encoder
    and UNet with their linear and convolution weights taken packed (:mod:`.quantize`)."""

    def __init__(self, root: Path, quantize=None):
        self.root = root
        self.quantize = quantize
        self.cache = LibraryCache(root)
        self._exports: dict[tuple, ExportedComponent] = {}
        self._stats: dict = {}

    def compile(
        self,
        component: str,
        load: Callable[[], object],
        configs: dict,
        latent_hw,
        spec: TargetSpec,
        dtype: str,
    ) -> CompiledComponent:
        """The cached library for this architecture, building it first on a miss."""
        _check(component, dtype)
        latent_hw = tuple(int(x) for x in latent_hw)
        target_json = spec.target_json()
        database = tuning.find_database(spec.key, target_json)
        try:
            return self._compile(component, load, configs, latent_hw, spec, dtype, database)
        except _BuildFailed as exc:
            if database is None:
                raise exc.error from exc.__cause__
            tuning.skip(database.directory, f"the build failed with it: {exc.error.message}")
        return self._compile(component, load, configs, latent_hw, spec, dtype, None)

    def is_cached(
        self, component: str, configs: dict, latent_hw, spec: TargetSpec, dtype: str
    ) -> bool:
        """Whether the library is in the cache (intact), so compiling it costs no build."""
        _check(component, dtype)
        database = tuning.find_database(spec.key, spec.target_json())
        signature = _signature(
            component,
            configs,
            tuple(int(x) for x in latent_hw),
            spec,
            dtype,
            database,
            self.quantize,
        )
        return self.cache.lookup(signature) is not None

    def _compile(self, component, load, configs, latent_hw, spec, dtype, database):
        target_json = spec.target_json()
        tuning_sha = database.sha256 if database else None
        signature = _signature(component, configs, latent_hw, spec, dtype, database, self.quantize)
        entry = self.cache.lookup(signature)
        reused = entry is not None
        if entry is None:
            exported = self._export(component, load, latent_hw)
            entry = self._build(signature, exported, spec, dtype, database)
        return CompiledComponent(
            component=component,
            target=spec.key,
            dtype=dtype,
            lib_path=entry["lib_path"],
            params=list(entry["params"]),
            param_source=entry["param_source"],
            inputs=entry["inputs"],
            outputs=entry["outputs"],
            signature=signature,
            tuning_db_sha256=tuning_sha,
            target_json=target_json,
            requirements=_requirements(spec, dtype, entry),
            reused=reused,
            quantized=list(entry.get("quantized", [])),
        )

    def _export(self, component, load, latent_hw) -> ExportedComponent:
        key = (component, latent_hw)
        if key not in self._exports:
            progress.status(f"exporting {component}")
            self._exports[key] = export_component(component, load(), latent_hw)
        return self._exports[key]

    def _build(self, signature, exported, spec, dtype, database) -> dict:
        params, quantized = exported.params, []
        decode = None
        if self.quantize is not None and exported.component in QUANTIZED_COMPONENTS:

            def decode(mod):
                nonlocal params, quantized
                mod, params, quantized = decode_weights(
                    mod, exported.component, exported.params, self.quantize
                )
                return mod

        mod = pipeline.prepare_for(exported.mod, dtype, spec, decode)
        meta = {
            "component": exported.component,
            "target": spec.key,
            "dtype": dtype,
            "params": params,
            "quantized": quantized,
            "param_source": exported.param_source,
            **_io(mod, exported),
            "tuning_db_sha256": database.sha256 if database else None,
            "pipeline_version": pipeline.PIPELINE_VERSION,
        }
        stats = self._stats = {}  # what the build measured (max_buffer_bytes), read by store()
        progress.status(f"compiling {meta['component']} for {spec.key} ({dtype})")
        start = time.monotonic()
        try:
            entry = self.cache.store(
                signature,
                spec.lib_suffix,
                lambda out: self._lower(mod, spec, database, out),
                meta,
                extra=stats,
            )
        except SdpackError as exc:
            raise _BuildFailed(exc) from exc
        except Exception as exc:  # TVM raises its own error zoo
            raise _BuildFailed(
                CompileError(
                    f"building {meta['component']} for {spec.key} failed: {type(exc).__name__}: "
                    f"{str(exc)[-1500:]}",
                    "the pass list is packer/compile/pipeline.py",
                )
            ) from exc
        progress.status(f"compiled in {time.monotonic() - start:.1f} s")
        return entry

    def _lower(self, mod, spec: TargetSpec, database, out: Path) -> None:
        if spec.needs_cuda_driver and not _cuda_runtime_loaded():
            tuning_dir = database.directory if database else None
            build_in_subprocess(mod, spec.key, tuning_dir, out, cuda_stub.build_env(self.root))
            return
        executable = pipeline.build(
            mod,
            spec,
            database.open() if database else None,
            self._stats if spec.measure_buffers else None,
        )
        spec.export(executable, out)


def _requirements(spec: TargetSpec, dtype: str, entry: dict) -> dict:
    """The target's requirements for ``dtype`` plus what the build measured (cache entry)."""
    requirements = spec.requirements_for(dtype)
    if spec.measure_buffers and isinstance(entry.get("max_buffer_bytes"), int):
        requirements["max_buffer_bytes"] = entry["max_buffer_bytes"]
    return requirements


def _signature(
    component, configs, latent_hw, spec: TargetSpec, dtype: str, database, quantize=None
) -> str:
    scheme = None
    if quantize is not None and component in QUANTIZED_COMPONENTS:
        scheme = {"scheme": quantize.name, "bits": quantize.bits, "group_size": quantize.group_size}
    return architecture_signature(
        configs,
        component=component,
        latent_hw=latent_hw,
        dtype=dtype,
        target_json=spec.target_json(),
        tuning_db_sha256=database.sha256 if database else None,
        quantization=scheme,
    )


class _BuildFailed(Exception):
    def __init__(self, error: SdpackError):
        super().__init__(error.message)
        self.error = error


def _io(mod, exported: ExportedComponent) -> dict:
    """``inputs``/``outputs`` as ``{"name", "shape", "dtype"}`` read from the prepared ``main``."""
    main = mod["main"]
    n_in = int(main.attrs["num_input"])
    inputs = [_tensor(name, var.ty) for name, var in zip(exported.input_names, main.params[:n_in])]
    return {"inputs": inputs, "outputs": [_tensor(exported.output_name, main.ret_ty)]}


def _tensor(name: str, ty) -> dict:
    return {"name": name, "shape": [int(x) for x in ty.shape], "dtype": str(ty.dtype)}


def _cuda_runtime_loaded() -> bool:
    """Whether this process loaded TVM's CUDA runtime (i.e. has a real driver)."""
    from tvm.base import _LOADED_LIBS

    return "tvm_runtime_cuda" in _LOADED_LIBS


def _check(component: str, dtype: str) -> None:
    if component not in COMPONENTS:
        raise UsageError(f"unknown component {component!r}", f"one of: {', '.join(COMPONENTS)}")
    if dtype not in DTYPES:
        raise UsageError(f"unsupported dtype {dtype!r}", f"one of: {', '.join(DTYPES)}")


def compile_component(
    component: str,
    module,
    *,
    configs: dict,
    latent_hw: tuple[int, int],
    target: str,
    dtype: str,
    cache_dir: Path | None = None,
    quantize=None,
) -> CompiledComponent:
    """Compile ``module`` (the whole diffusers/transformers component; for ``vae_decoder`` the
    ``AutoencoderKL``) for ``target``, or return the cached library of its architecture.

    >>> cc = compile_component("unet", unet, configs=sig_configs["unet"], latent_hw=(64, 64),
    ...                        target="cuda-sm86", dtype="float16")  # doctest: +SKIP
    >>> cc.lib_path, cc.params[:1]  # doctest: +SKIP
    (PosixPath('~/.cache/sdpack/compiled/3f1c….so'), ['conv_in.weight'])
    """
    spec = get_target(target)
    return Compiler(cache_root(cache_dir), quantize).compile(
        component, lambda: module, configs, latent_hw, spec, dtype
    )


def compile_all(
    checkpoint_like,
    *,
    variants: list[tuple[str, str]],
    latent_hw=None,
    cache_dir=None,
    quantize=None,
) -> dict[tuple[str, str, str], CompiledComponent]:
    """Every component for every ``(target, dtype)`` variant, keyed ``(component, target as
    passed, dtype)``.

    Components are loaded (``checkpoint_like.unet()`` …) and exported at most once, and only
    when some variant misses the cache. Before anything is exported, every target with a miss
    has its toolchain checked (:attr:`TargetSpec.toolchain`): a missing ``emcc`` fails in a
    second, not after the other targets were built.
    """
    specs = {name: get_target(name) for name, _ in variants}
    configs = checkpoint_like.signature_configs()
    loaders = _memo_loaders(checkpoint_like)
    hw = latent_hw or _default_latent_hw(checkpoint_like, loaders["unet"])
    compiler = Compiler(cache_root(cache_dir), quantize)
    jobs = [(component, name, dtype) for name, dtype in variants for component in COMPONENTS]
    for name in dict.fromkeys(
        name
        for component, name, dtype in jobs
        if not compiler.is_cached(
            component, _component_configs(configs, component), hw, specs[name], dtype
        )
    ):
        specs[name].toolchain()
    return {
        (component, name, dtype): compiler.compile(
            component,
            loaders[component],
            _component_configs(configs, component),
            hw,
            specs[name],
            dtype,
        )
        for component, name, dtype in jobs
    }


def _memo_loaders(ckpt) -> dict[str, Callable[[], object]]:
    methods = {"text_encoder": ckpt.text_encoder, "unet": ckpt.unet, "vae_decoder": ckpt.vae}
    loaded: dict[str, object] = {}

    def loader(component):
        def load():
            if component not in loaded:
                loaded[component] = methods[component]()
            return loaded[component]

        return load

    return {component: loader(component) for component in methods}


def _component_configs(configs: dict, component: str) -> dict:
    """This component's part of ``signature_configs()`` (all of it if not split by component)."""
    source = SPECS[component].param_source
    for key in (component, source):
        if isinstance(configs, dict) and isinstance(configs.get(key), dict):
            return configs[key]
    return configs


def _default_latent_hw(ckpt, load_unet) -> tuple[int, int]:
    """The UNet's native ``sample_size`` (64 for SD1.5: 512×512 images)."""
    configs = getattr(ckpt, "configs", None)
    unet_cfg = configs.get("unet") if isinstance(configs, dict) else None
    size = unet_cfg.get("sample_size") if isinstance(unet_cfg, dict) else None
    if size is None:
        size = load_unet().config.sample_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

"""The `packer` command: one thin function per verb, each calling packer.interface.

Only this module turns an :class:`SdpackError` into an exit code and one line on stderr.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from packer.errors import SdpackError, UsageError

DTYPES = ("fp16", "fp32")
DEVICES = ("cpu", "cuda", "opencl")
SCHEDULERS = ("dpm++", "euler", "euler-a", "ddim", "pndm")
TARGETS = (
    "llvm",
    "cpu",
    "cuda",
    "cuda-sm80",
    "cuda-sm86",
    "cuda-sm89",
    "cuda-sm90",
    "opencl",
    "opencl-mali",
    "webgpu",
)
"""The names help and completion offer; tests/cli/test_conventions.py holds them to the registries
(packer.compile.targets imports torch, too slow to load for every command)."""
HUB_HELP = (
    "where the hub is: 'hf' (HF_ENDPOINT, else huggingface.co), a Hub URL, or a directory hub"
)
JSON_HELP = "print one JSON object instead (formats/cli-output.schema.json)"


class _Group(TyperGroup):
    """Click's own usage errors (a missing option, an unknown flag) as one ``error:`` line too."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            _echo_error("aborted")
            sys.exit(1)
        except Exception as exc:
            message = getattr(exc, "format_message", None)
            if message is None or not isinstance(getattr(exc, "exit_code", None), int):
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
                sys.exit(exc.exit_code)
            where = ctx.command_path if ctx is not None else "packer"
            _echo_error(f"{' '.join(message().split())} (see `{where} -h`)")
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="packer",
    cls=_Group,
    help="Pack Stable Diffusion 1.5-architecture checkpoints into verifiable bundles.",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is shown as written: ORG/NAME[@REV] is not markup
    pretty_exceptions_enable=False,
)


TARGETS_HELP = (
    "comma-separated compile targets (default: webgpu,llvm, plus cuda when this machine has a "
    "CUDA GPU and nvcc)"
)
QUANTIZE_HELP = (
    "store text-encoder and UNet linear/conv weights group-quantized (4 or 8 bits, float16 scales)"
)
DTYPE_HELP = (
    "fp16 or fp32: every target in it, weights stored in it (default: webgpu fp16 and fp32, "
    "llvm fp32, cuda fp16, over fp16 weights)"
)
LICENSE_HELP = "license for the manifest and model card (default: the source card's, else creativeml-openrail-m)"
BASE_MODEL_HELP = (
    "ORG/NAME of the model this one derives from, for the model card (default: the source's Hub id, "
    "else stable-diffusion-v1-5/stable-diffusion-v1-5)"
)


def _target_list(targets: str | None) -> list[str] | None:
    return None if targets is None else [t.strip() for t in targets.split(",") if t.strip()]


def _echo_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _names(choices: tuple[str, ...]):
    """Shell completion for an option taking one of ``choices``."""
    return lambda incomplete: [c for c in choices if c.startswith(incomplete)]


def _complete_targets(incomplete: str) -> list[str]:
    """Completion inside a comma-separated target list: the names for the part after the last comma."""
    done, _, last = incomplete.rpartition(",")
    taken = set(done.split(",")) if done else set()
    return [
        (done + "," if done else "") + t for t in TARGETS if t.startswith(last) and t not in taken
    ]


def _emit(result, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        typer.echo(result.display())


def _hub(hub: str | None, to: str | None = None, endpoint: str | None = None) -> str | None:
    """``--hub``, or its older spellings ``--to`` (publish) and ``--endpoint``; None if none is given.

    ``--to hf --endpoint URL`` meant the Hub at URL, so it still does."""
    if to == "hf" and endpoint is not None:
        to = None
    given = {
        name: v
        for name, v in (("--hub", hub), ("--to", to), ("--endpoint", endpoint))
        if v is not None
    }
    if len(set(given.values())) > 1:
        raise UsageError(f"{' and '.join(given)} name different hubs", "pass only --hub hf|URL|DIR")
    return next(iter(given.values()), None)


def _fail(message: str, code: int) -> None:
    _echo_error(message)
    raise typer.Exit(code)


def handles_errors(fn):
    """Turn SdpackError into one line + exit code; never show a traceback for bad input."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SdpackError as exc:
            _fail(exc.one_line(), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory", 3)

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        from packer.interface.version import VersionArgs
        from packer.interface.version import version as run

        typer.echo(run(VersionArgs()).display())
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="print sdpack's version and the pinned compiler versions, then exit",
    ),
) -> None:
    """Pack Stable Diffusion 1.5-architecture checkpoints into verifiable bundles."""


@app.command()
@handles_errors
def verify(
    bundle: Path = typer.Argument(..., help="bundle directory", metavar="BUNDLE"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check a bundle against the schema and every hash; exit 1 naming the first bad file."""
    from packer.interface.verify import VerifyArgs
    from packer.interface.verify import verify as run

    _emit(run(VerifyArgs(bundle)), as_json)


@app.command()
@handles_errors
def inspect(
    bundle: Path = typer.Argument(..., help="bundle directory", metavar="BUNDLE"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Print a human summary of a bundle."""
    from packer.interface.inspect import InspectArgs
    from packer.interface.inspect import inspect as run

    _emit(run(InspectArgs(bundle)), as_json)


@app.command()
@handles_errors
def pack(
    checkpoint: str = typer.Argument(
        ...,
        help="single-file .safetensors/.ckpt, diffusers folder, or Hub id ORG/NAME[@REV]",
        metavar="CHECKPOINT",
    ),
    out: Path = typer.Option(..., "--out", help="bundle directory to create"),
    targets: str = typer.Option(
        None,
        help=TARGETS_HELP,
        metavar="[" + "|".join(TARGETS) + "],...",
        autocompletion=_complete_targets,
    ),
    dtype: str = typer.Option(
        None, help=DTYPE_HELP, metavar="[" + "|".join(DTYPES) + "]", autocompletion=_names(DTYPES)
    ),
    version: str = typer.Option("0.1.0", help="bundle version (semver)"),
    model_id: str = typer.Option(None, "--model-id", help="ORG/NAME recorded in the manifest"),
    license: str = typer.Option(None, help=LICENSE_HELP),
    base_model: str = typer.Option(None, "--base-model", help=BASE_MODEL_HELP),
    tokenizer: Path = typer.Option(None, help="CLIP tokenizer folder for single-file checkpoints"),
    prediction_type: str = typer.Option(
        None,
        "--prediction-type",
        help="epsilon or v_prediction",
        metavar="[epsilon|v_prediction]",
        autocompletion=_names(("epsilon", "v_prediction")),
    ),
    image_size: int = typer.Option(
        None, "--image-size", help="image size in pixels (default: the checkpoint's, else 512)"
    ),
    shard_mb: int = typer.Option(32, "--shard-mb", help="raw shard size in MiB"),
    quantize: str = typer.Option(
        None,
        "--quantize",
        help=QUANTIZE_HELP,
        metavar="[q4f16|q8f16]",
        autocompletion=_names(("q4f16", "q8f16")),
    ),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Ingest a checkpoint, compile it (reusing cached libraries) and write a bundle."""
    from packer.interface.pack import PackArgs
    from packer.interface.pack import pack as run

    args = PackArgs(
        checkpoint,
        out,
        _target_list(targets),
        dtype,
        version,
        model_id,
        license=license,
        base_model=base_model,
        tokenizer=tokenizer,
        prediction_type=prediction_type,
        image_size=image_size,
        shard_mb=shard_mb,
        overwrite=overwrite,
        quantize=quantize,
    )
    _emit(run(args), as_json)


@app.command()
@handles_errors
def generate(
    bundle: Path = typer.Argument(..., help="bundle directory", metavar="BUNDLE"),
    prompt: str = typer.Option(..., help="what to draw"),
    out: Path = typer.Option(Path("image.png"), help="PNG to write"),
    negative_prompt: str = typer.Option("", "--negative-prompt"),
    seed: int = typer.Option(0, help="noise seed (0 .. 2^64-1)"),
    steps: int = typer.Option(None, help="denoising steps (default: the bundle's)"),
    guidance: float = typer.Option(
        None, help="classifier-free guidance scale (default: the bundle's)"
    ),
    scheduler: str = typer.Option(
        None,
        help="sampler (default: the bundle's)",
        metavar="[" + "|".join(SCHEDULERS) + "]",
        autocompletion=_names(SCHEDULERS),
    ),
    device: str = typer.Option(
        "cpu",
        help="where to run",
        metavar="[" + "|".join(DEVICES) + "]",
        autocompletion=_names(DEVICES),
    ),
    latents: Path = typer.Option(None, help="initial latents (.npy) instead of the seeded noise"),
    cuda_graph: bool = typer.Option(
        True,
        "--cuda-graph/--no-cuda-graph",
        help="on cuda, replay each component call as a captured CUDA graph "
        "where the bundle's variant allows it",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Generate an image from a bundle with the native TVM runtime."""
    from packer.interface.generate import GenerateArgs
    from packer.interface.generate import generate as run

    args = GenerateArgs(
        bundle,
        prompt,
        out,
        negative_prompt,
        seed,
        steps,
        guidance,
        scheduler,
        device,
        latents,
        cuda_graph,
    )
    _emit(run(args), as_json)


@app.command()
@handles_errors
def publish(
    repo: str = typer.Argument(..., help="repository id", metavar="ORG/NAME"),
    version: str = typer.Option(
        ..., "--version", help="semantic version, e.g. 1.0.0 (tagged v1.0.0)"
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", help="checkpoint to pack and publish"),
    bundle: Path = typer.Option(
        None, "--bundle", help="an already packed bundle to publish instead"
    ),
    targets: str = typer.Option(
        None,
        help=TARGETS_HELP + " (with --checkpoint)",
        metavar="[" + "|".join(TARGETS) + "],...",
        autocompletion=_complete_targets,
    ),
    dtype: str = typer.Option(
        None,
        help=DTYPE_HELP + " (with --checkpoint)",
        metavar="[" + "|".join(DTYPES) + "]",
        autocompletion=_names(DTYPES),
    ),
    tokenizer: Path = typer.Option(None, help="CLIP tokenizer folder for single-file checkpoints"),
    prediction_type: str = typer.Option(
        None,
        "--prediction-type",
        help="epsilon or v_prediction",
        metavar="[epsilon|v_prediction]",
        autocompletion=_names(("epsilon", "v_prediction")),
    ),
    image_size: int = typer.Option(
        None, "--image-size", help="image size in pixels (default: the checkpoint's, else 512)"
    ),
    license: str = typer.Option(None, help=LICENSE_HELP + " (with --checkpoint)"),
    base_model: str = typer.Option(
        None, "--base-model", help=BASE_MODEL_HELP + " (with --checkpoint)"
    ),
    quantize: str = typer.Option(
        None,
        "--quantize",
        help=QUANTIZE_HELP + " (with --checkpoint)",
        metavar="[q4f16|q8f16]",
        autocompletion=_names(("q4f16", "q8f16")),
    ),
    private: bool = typer.Option(False, "--private", help="create the Hub repo as private"),
    hub: str = typer.Option(None, "--hub", help=HUB_HELP + " [default: hf]", metavar="hf|URL|DIR"),
    to: str = typer.Option(None, "--to", hidden=True),
    endpoint: str = typer.Option(None, "--endpoint", hidden=True),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pack a checkpoint (reusing compiled libraries) and publish it as an immutable version:
    one commit, tagged vX.Y.Z (token: HF_TOKEN or `hf auth login`)."""
    from packer.interface.pack import PackArgs
    from packer.interface.publish import PublishArgs
    from packer.interface.publish import publish as run

    pack_args = None
    if checkpoint is not None:
        pack_args = PackArgs(
            checkpoint,
            Path(),
            _target_list(targets),
            dtype,
            version,
            repo,
            license=license,
            base_model=base_model,
            tokenizer=tokenizer,
            prediction_type=prediction_type,
            image_size=image_size,
            quantize=quantize,
        )
    args = PublishArgs(bundle, repo, version, private, pack=pack_args)
    if (checkpoint is None) == (bundle is None):
        args.checked()  # says which of the two to pass before the hub options are looked at
    from packer.hub.resolve import publish_destination

    args.to, args.endpoint = publish_destination(_hub(hub, to, endpoint) or "hf")
    _emit(run(args), as_json)


@app.command("publish-batch")
@handles_errors
def publish_batch(
    jobs: Path = typer.Argument(
        ...,
        help="job file: .jsonl (one JSON object per line) or .toml ([[job]] tables); "
        "formats/batch-job.schema.json",
        metavar="JOBS",
    ),
    hub: str = typer.Option("hf", "--hub", help=HUB_HELP, metavar="hf|URL|DIR"),
    address: str = typer.Option(
        None,
        "--address",
        help="a running Ray cluster (`ray start --head` prints it); "
        "default: Ray in this process, on this machine",
    ),
    cache: Path = typer.Option(
        None,
        "--cache",
        help="compile cache every worker reads (on a cluster: a shared "
        "filesystem) [default: SDPACK_CACHE, else ~/.cache/sdpack]",
    ),
    retries: int = typer.Option(
        3, "--retries", help="times a job is retried when its worker process dies"
    ),
    as_json: bool = typer.Option(
        False, "--json", help=JSON_HELP + "; printed also when some jobs failed"
    ),
) -> None:
    """Publish many checkpoints on Ray: one job per line of JOBS, libraries compiled once per architecture.
    Exit 2 when any job failed (one stderr line each); a rerun skips versions already published."""
    from packer.batch.verb import PublishBatchArgs
    from packer.batch.verb import publish_batch as run

    result = run(PublishBatchArgs(jobs, hub, address, cache, retries))
    _emit(result, as_json)
    for line in result.error_lines():
        _echo_error(line)
    if result.failed:
        raise typer.Exit(2)


@app.command()
@handles_errors
def resolve(
    spec: str = typer.Argument(
        ...,
        help="ORG/NAME@VERSION, ORG/NAME@COMMIT, or a lock file",
        metavar="ORG/NAME@REV|LOCKFILE",
    ),
    hub: str = typer.Option(
        None, "--hub", help=HUB_HELP + " [default: the lock file's, else hf]", metavar="hf|URL|DIR"
    ),
    endpoint: str = typer.Option(None, "--endpoint", hidden=True),
    lock_out: Path = typer.Option(None, "--lock-out", help="write a lock record here"),
    as_json: bool = typer.Option(
        False, "--json", help=JSON_HELP + "; the default output is that object too"
    ),
) -> None:
    """Print the commit, manifest URL and manifest sha256 a version pins (JSON). For a directory
    hub the URL is where `packer serve DIR` answers; `serve` says so."""
    from packer.interface.resolve import ResolveArgs
    from packer.interface.resolve import resolve as run

    _emit(run(ResolveArgs(spec, endpoint=_hub(hub, None, endpoint), lock_out=lock_out)), as_json)


@app.command()
@handles_errors
def pull(
    spec: str = typer.Argument(
        ...,
        help="ORG/NAME@VERSION, ORG/NAME@COMMIT, or a lock file",
        metavar="ORG/NAME@REV|LOCKFILE",
    ),
    out: Path = typer.Option(..., "--out", help="directory to create (must not exist)"),
    hub: str = typer.Option(
        None, "--hub", help=HUB_HELP + " [default: the lock file's, else hf]", metavar="hf|URL|DIR"
    ),
    endpoint: str = typer.Option(None, "--endpoint", hidden=True),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Download a pinned bundle and verify every file before it appears at --out. From a Hub the
    files go through the Hugging Face cache (HF_HOME): a cut-off pull resumes where it stopped."""
    from packer.interface.pull import PullArgs
    from packer.interface.pull import pull as run

    _emit(run(PullArgs(spec, out, endpoint=_hub(hub, None, endpoint))), as_json)


@app.command()
@handles_errors
def versions(
    repo: str = typer.Argument(..., help="repository id", metavar="ORG/NAME"),
    hub: str = typer.Option(None, "--hub", help=HUB_HELP + " [default: hf]", metavar="hf|URL|DIR"),
    endpoint: str = typer.Option(None, "--endpoint", hidden=True),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the published versions, newest first: commit, date, targets and size of each."""
    from packer.interface.versions import VersionsArgs
    from packer.interface.versions import versions as run

    _emit(run(VersionsArgs(repo, _hub(hub, None, endpoint))), as_json)


@app.command()
@handles_errors
def serve(
    directory: Path = typer.Argument(
        ..., help="directory hub (written by `packer publish --hub DIR`)", metavar="DIR"
    ),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="address to bind (127.0.0.1 unless you mean it)"
    ),
    app_dir: Path = typer.Option(
        None, "--app", help="also serve this folder's static files at /app/ (e.g. runtime-web)"
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + ", once the server listens"),
) -> None:
    """Serve a directory hub at /ORG/NAME/resolve/REV/PATH with CORS and Range, for browsers."""
    from packer.interface.serve import ServeArgs
    from packer.interface.serve import serve as run

    serving = run(ServeArgs(directory, port=port, host=host, app=app_dir))
    _emit(serving, as_json)
    serving.wait()


@app.command()
@handles_errors
def version(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Print sdpack's version and the pinned compiler versions."""
    from packer.interface.version import VersionArgs
    from packer.interface.version import version as run

    _emit(run(VersionArgs()), as_json)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line (no source line, no machine path)."""
    print("warning: " + " ".join(str(message).split()), file=file or sys.stderr)


def main() -> None:
    import warnings

    warnings.showwarning = _show_warning
    app(prog_name="packer")


if __name__ == "__main__":
    sys.exit(main())

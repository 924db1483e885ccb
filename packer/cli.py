"""The `packer` command: one thin function per verb, each calling packer.interface.

Only this module turns an :class:`SdpackError` into an exit code and one line on stderr.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from packer import __version__
from packer.errors import SdpackError, UsageError

app = typer.Typer(
    name="packer",
    help="Pack Stable Diffusion 1.5-architecture checkpoints into verifiable bundles.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


TARGETS_HELP = ("comma-separated compile targets: webgpu, llvm, cuda[-sm80|-sm86|-sm89|-sm90] "
                "(default: webgpu,llvm, plus cuda when this machine has a CUDA GPU and nvcc)")
DTYPE_HELP = ("fp16 or fp32: every target in it, weights stored in it (default: webgpu fp16 and fp32, "
              "llvm fp32, cuda fp16, over fp16 weights)")
LICENSE_HELP = "license for the manifest and model card (default: the source card's, else creativeml-openrail-m)"
BASE_MODEL_HELP = ("ORG/NAME of the model this one derives from, for the model card (default: the source's Hub id, "
                   "else stable-diffusion-v1-5/stable-diffusion-v1-5)")


def _target_list(targets: str | None) -> list[str] | None:
    return None if targets is None else [t.strip() for t in targets.split(",") if t.strip()]


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
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


@app.command()
@handles_errors
def verify(bundle: Path = typer.Argument(..., help="bundle directory")) -> None:
    """Check a bundle against the schema and every hash; exit 1 naming the first bad file."""
    from packer.interface.verify import verify as run

    typer.echo(run(bundle).display())


@app.command()
@handles_errors
def inspect(bundle: Path = typer.Argument(..., help="bundle directory")) -> None:
    """Print a human summary of a bundle."""
    from packer.interface.inspect import summary

    typer.echo(summary(bundle))


@app.command()
@handles_errors
def pack(
    checkpoint: str = typer.Argument(..., help="single-file .safetensors/.ckpt, diffusers folder, or Hub id ORG/NAME[@REV]"),
    out: Path = typer.Option(..., "--out", help="bundle directory to create"),
    targets: str = typer.Option(None, help=TARGETS_HELP),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    version: str = typer.Option("0.1.0", help="bundle version (semver)"),
    model_id: str = typer.Option(None, "--model-id", help="ORG/NAME recorded in the manifest"),
    license: str = typer.Option(None, help=LICENSE_HELP),
    base_model: str = typer.Option(None, "--base-model", help=BASE_MODEL_HELP),
    tokenizer: Path = typer.Option(None, help="CLIP tokenizer folder for single-file checkpoints"),
    prediction_type: str = typer.Option(None, "--prediction-type", help="epsilon or v_prediction"),
    image_size: int = typer.Option(None, "--image-size", help="image size in pixels (default: the checkpoint's, else 512)"),
    shard_mb: int = typer.Option(32, "--shard-mb", help="raw shard size in MiB"),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
) -> None:
    """Ingest a checkpoint, compile it (reusing cached libraries) and write a bundle."""
    from packer.interface.pack import PackArgs
    from packer.interface.pack import pack as run

    args = PackArgs(checkpoint, out, _target_list(targets), dtype, version, model_id, license=license,
                    base_model=base_model, tokenizer=tokenizer, prediction_type=prediction_type,
                    image_size=image_size, shard_mb=shard_mb, overwrite=overwrite)
    typer.echo(run(args).display())


@app.command()
@handles_errors
def generate(
    bundle: Path = typer.Argument(..., help="bundle directory"),
    prompt: str = typer.Option(..., help="what to draw"),
    out: Path = typer.Option(Path("image.png"), help="PNG to write"),
    negative_prompt: str = typer.Option("", "--negative-prompt"),
    seed: int = typer.Option(0, help="noise seed (0 .. 2^64-1)"),
    steps: int = typer.Option(None, help="denoising steps (default: the bundle's)"),
    guidance: float = typer.Option(None, help="classifier-free guidance scale (default: the bundle's)"),
    scheduler: str = typer.Option(None, help="dpm++, euler, euler-a, ddim or pndm"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    latents: Path = typer.Option(None, help="initial latents (.npy) instead of the seeded noise"),
) -> None:
    """Generate an image from a bundle with the native TVM runtime."""
    from packer.interface.generate import GenerateArgs
    from packer.interface.generate import generate as run

    args = GenerateArgs(bundle, prompt, out, negative_prompt, seed, steps, guidance, scheduler, device, latents)
    typer.echo(run(args).display())


@app.command()
@handles_errors
def publish(
    repo: str = typer.Argument(..., help="ORG/NAME on the Hub"),
    version: str = typer.Option(..., "--version", help="semantic version, e.g. 1.0.0 (tagged v1.0.0)"),
    checkpoint: str = typer.Option(None, "--checkpoint", help="checkpoint to pack and publish"),
    bundle: Path = typer.Option(None, "--bundle", help="an already packed bundle to publish instead"),
    targets: str = typer.Option(None, help=TARGETS_HELP + " (with --checkpoint)"),
    dtype: str = typer.Option(None, help=DTYPE_HELP + " (with --checkpoint)"),
    tokenizer: Path = typer.Option(None, help="CLIP tokenizer folder for single-file checkpoints"),
    prediction_type: str = typer.Option(None, "--prediction-type", help="epsilon or v_prediction"),
    image_size: int = typer.Option(None, "--image-size", help="image size in pixels (default: the checkpoint's, else 512)"),
    license: str = typer.Option(None, help=LICENSE_HELP + " (with --checkpoint)"),
    base_model: str = typer.Option(None, "--base-model", help=BASE_MODEL_HELP + " (with --checkpoint)"),
    private: bool = typer.Option(False, "--private", help="create the Hub repo as private"),
    to: str = typer.Option("hf", "--to", help="'hf' for the Hugging Face Hub, or a directory hub"),
    endpoint: str = typer.Option(None, "--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)"),
) -> None:
    """Pack a checkpoint (reusing compiled libraries) and publish it as an immutable version:
    one commit, tagged vX.Y.Z (token: HF_TOKEN or `hf auth login`)."""
    from packer.interface.pack import PackArgs
    from packer.interface.publish import publish_checkpoint

    if (checkpoint is None) == (bundle is None):
        raise UsageError("publish needs exactly one of --checkpoint or --bundle",
                         "pass --checkpoint FILE to pack and publish it, or --bundle DIR for a packed bundle")
    dest = to if to == "hf" else Path(to)
    pack_args = None
    if checkpoint is not None:
        pack_args = PackArgs(checkpoint, Path(), _target_list(targets), dtype, version, repo, license=license,
                             base_model=base_model, tokenizer=tokenizer, prediction_type=prediction_type,
                             image_size=image_size)
    typer.echo(publish_checkpoint(repo, version, pack_args=pack_args, bundle=bundle, private=private,
                                  to=dest, endpoint=endpoint).display())


@app.command()
@handles_errors
def resolve(
    spec: str = typer.Argument(..., help="ORG/NAME@VERSION, ORG/NAME@<commit sha>, or a lock file"),
    endpoint: str = typer.Option(None, "--endpoint", help="Hub URL or directory hub"),
    lock_out: Path = typer.Option(None, "--lock-out", help="write a lock record here"),
) -> None:
    """Print the commit, manifest URL and manifest sha256 a version pins (JSON)."""
    from packer.interface.resolve import resolve_pin

    typer.echo(resolve_pin(spec, endpoint=endpoint, lock_out=lock_out).display())


@app.command()
@handles_errors
def pull(
    spec: str = typer.Argument(..., help="ORG/NAME@VERSION, ORG/NAME@<commit sha>, or a lock file"),
    out: Path = typer.Option(..., "--out", help="directory to create (must not exist)"),
    endpoint: str = typer.Option(None, "--endpoint", help="Hub URL or directory hub (default: the lock's)"),
) -> None:
    """Download a pinned bundle and verify every file before it appears at --out."""
    from packer.interface.pull import pull_bundle

    typer.echo(pull_bundle(spec, out, endpoint=endpoint).display())


@app.command()
@handles_errors
def serve(
    directory: Path = typer.Argument(..., help="directory hub (written by `packer publish --to DIR`)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (127.0.0.1 unless you mean it)"),
    app_dir: Path = typer.Option(None, "--app", help="also serve this folder's static files at /app/ (e.g. runtime-web)"),
) -> None:
    """Serve a directory hub at /ORG/NAME/resolve/REV/PATH with CORS and Range, for browsers."""
    from packer.interface.serve import start

    serving = start(directory, port=port, host=host, app=app_dir)
    typer.echo(serving.display())
    serving.wait()


@app.command()
def version() -> None:
    """Print sdpack's version and the pinned compiler versions."""
    from importlib.metadata import version as v

    typer.echo(f"sdpack {__version__} (apache-tvm {v('apache-tvm')}, apache-tvm-ffi {v('apache-tvm-ffi')})")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line (no source line, no machine path)."""
    print("warning: " + " ".join(str(message).split()), file=file or sys.stderr)


def main() -> None:
    import warnings

    warnings.showwarning = _show_warning
    app(prog_name="packer")


if __name__ == "__main__":
    sys.exit(main())

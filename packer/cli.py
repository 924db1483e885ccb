"""The `packer` command: one thin function per verb, each calling packer.interface.

Only this module turns an :class:`SdpackError` into an exit code and one line on stderr.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from packer import __version__
from packer.errors import SdpackError

app = typer.Typer(
    name="packer",
    help="Pack Stable Diffusion 1.5-architecture checkpoints into verifiable bundles.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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
def version() -> None:
    """Print sdpack's version and the pinned compiler versions."""
    from importlib.metadata import version as v

    typer.echo(f"sdpack {__version__} (apache-tvm {v('apache-tvm')}, apache-tvm-ffi {v('apache-tvm-ffi')})")


def main() -> None:
    app(prog_name="packer")


if __name__ == "__main__":
    sys.exit(main())

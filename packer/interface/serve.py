"""`packer serve DIR [--port N] [--host H]`: a directory hub over HTTP, with the Hub's URL shape.

Binds 127.0.0.1 by default: exposing a hub to the network is a decision, not a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.hub.serve import make_server


@dataclass
class ServeArgs:
    """The directory hub to serve, where to listen, and an optional static app folder."""

    directory: Path
    port: int = 8000
    host: str = "127.0.0.1"
    app: Path | None = None

    def __post_init__(self) -> None:
        self.directory, self.app = Path(self.directory), Path(self.app) if self.app else None

    def display(self) -> str:
        return f"serve {self.directory} on {self.host}:{self.port}"


class Serving:
    """A bound server: ``display()`` says where, ``wait()`` serves until Ctrl-C, ``stop()`` ends it."""

    def __init__(self, args: ServeArgs):
        self.args = args
        self.server = make_server(args.directory, args.port, args.host, args.app)
        self.url = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    def as_json(self) -> dict:
        return {
            "command": "serve",
            "directory": str(self.args.directory),
            "url": self.url,
            "manifest_url": f"{self.url}/ORG/NAME/resolve/REV/manifest.json",
            "app_url": f"{self.url}/app/" if self.args.app is not None else None,
        }

    def display(self) -> str:
        text = f"serving {self.args.directory} at {self.url}/ORG/NAME/resolve/vX.Y.Z/manifest.json"
        if self.args.app is not None:
            text += f"\nweb app {self.args.app} at {self.url}/app/"
        return text + " (Ctrl-C to stop)"

    def wait(self) -> None:
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(args: ServeArgs) -> Serving:
    """Bind the server (it serves once :meth:`Serving.wait` runs)."""
    return Serving(args)

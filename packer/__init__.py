"""sdpack: Stable Diffusion 1.5-architecture checkpoints as versioned, verifiable bundles."""

__version__ = "0.1.0"

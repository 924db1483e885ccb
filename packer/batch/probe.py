"""What the scheduler must know about a job before it packs: its library keys, and whether
its version is already published.

A library key names what one component compiles to: that component's signature configs
(:func:`packer.ingest.architecture.signature_configs`, after the job's ``image_size``), the
latent size (every library's input shapes follow it) and the (target, dtype) variants the job
builds. Two
checkpoints that differ only in their text encoder share the UNet's and the VAE's keys. An LDM ``.safetensors`` file is probed from its header
alone (the header is validated as ingest validates it, then its shapes go through ingest's own
key conversion and config inference as meta tensors: no tensor is read); any other layout is
ingested in full. A probe that fails is the job's failure, with ingest's one-line error.
"""

from __future__ import annotations

from pathlib import Path

from packer.batch.jobs import Job
from packer.errors import CheckpointError
from packer.support import canonical
from packer.support.names import tag_name


def library_keys(job: Job) -> list[str]:
    """One sha256 per component naming the libraries ``job`` needs for it: jobs sharing a key
    share those libraries, so one run never compiles a key twice."""
    from packer.compile import plan
    from packer.interface.pack import DTYPES

    args = job.pack_args()
    chosen = plan(args.targets, DTYPES[args.dtype] if args.dtype else None)
    configs = _signature_configs(job)
    common = {
        "latent": configs["unet"].get("sample_size"),
        "variants": sorted([v.target, v.dtype] for v in chosen.variants),
    }
    return sorted(
        canonical.sha256_bytes(
            canonical.dumps({**common, "component": name, "configs": configs[name]})
        )
        for name in ("text_encoder", "unet", "vae")
    )


def _signature_configs(job: Job) -> dict:
    path = Path(job.checkpoint)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        try:
            configs = _header_configs(path)
        except CheckpointError:
            raise
        except Exception:  # a layout the header path does not cover: full ingest says what it is
            pass
        else:
            return _sized(configs, job.image_size).signature_configs()
    from packer.ingest import ingest

    ckpt = ingest(
        job.checkpoint,
        tokenizer=Path(job.tokenizer) if job.tokenizer else None,
        prediction_type=job.prediction_type,
        image_size=job.image_size,
    )
    return ckpt.signature_configs()


def _sized(configs: dict, image_size: int | None):
    """A state-less :class:`Checkpoint` of ``configs`` at ``image_size`` (ingest's own override)."""
    from packer.ingest import Checkpoint, with_image_size

    ckpt = Checkpoint(
        source={},
        configs=configs,
        state_dicts={},
        tokenizer_dir=Path(),
        prediction_type="epsilon",
        scheduler_config={},
    )
    return ckpt if image_size is None else with_image_size(ckpt, image_size)


def _header_configs(path: Path) -> dict:
    import torch

    from packer.ingest import architecture, single_file, weights

    header = weights.check_safetensors_header(path)
    meta = header.pop("__metadata__")
    shapes = {k: torch.empty(v["shape"], device="meta") for k, v in header.items()}
    single_file.check_keys(list(shapes), path.name)
    state_dicts = single_file.ldm_to_diffusers(shapes, path.name)
    configs = single_file.infer_configs(state_dicts, meta, path.name)
    for component in architecture.COMPONENTS:
        configs[component], _ = architecture.complete(
            component, configs[component], state_dicts[component], path.name
        )
    return configs


def published_commit(hub: str | Path | None, job: Job) -> str | None:
    """The commit ``job``'s version is tagged at on ``hub``, or None when it is not published."""
    from packer.hub.local import LocalHub
    from packer.hub.resolve import remote_for

    if (
        hub not in (None, "hf")
        and not str(hub).startswith(("http://", "https://"))
        and not Path(hub).is_dir()
    ):
        return None  # a directory hub that does not exist yet holds nothing
    remote = remote_for(hub)
    if isinstance(remote, LocalHub):
        if not (remote.repo_dir(job.repo) / "refs").is_dir():
            return None
        return remote.commit_for(job.repo, tag_name(job.version))
    from huggingface_hub.errors import RepositoryNotFoundError

    from packer.hub.hf import hub_errors

    with hub_errors(remote.endpoint, job.repo, "listing versions"):
        try:
            refs = remote.api.list_repo_refs(job.repo)
        except RepositoryNotFoundError:
            return None
    return next((t.target_commit for t in refs.tags if t.name == tag_name(job.version)), None)

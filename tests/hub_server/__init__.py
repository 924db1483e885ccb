"""A Hugging Face Hub-protocol test server for the real ``huggingface_hub`` client (2.4.0).

Endpoints (models only; docs/design.md, "Hub test server", says what the client relies on):
POST /api/repos/create (409 still carries {"url"}), POST /api/validate-yaml (metadata.py), GET /api/whoami-v2,
POST /api/models/{repo}/preupload/{rev}, POST /{repo}.git/info/lfs/objects/batch, PUT upload /
POST verify (hrefs from the batch answer), POST /api/models/{repo}/commit/{rev} (NDJSON, atomic),
POST /api/models/{repo}/tag/{rev}, GET /api/models/{repo}/refs, GET /api/models/{repo}/commits/{rev}
(newest first, with dates), GET /api/models/{repo}/tree/{rev}[/{path}],
GET /api/models/{repo}[/revision/{rev}], GET|HEAD /{repo}/resolve/{rev}/{path} (Range, CORS),
OPTIONS anywhere (204 preflight).

LFS rule (preupload), as on the Hub: a file is LFS if a ``filter=lfs`` pattern of the revision's
.gitattributes matches it (the default one lists *.zst, *.bin, *.safetensors, ...), if its sample
holds a NUL byte (binary), or if it is large: 10 KiB here instead of the Hub's 10 MB, so that
small test shards exercise LFS.

Test hooks: ``server.faults`` (faults.py), ``server.counters`` (requests per step),
``server.lfs_puts`` (oids whose upload completed), ``server.downloads`` (every file GET: path,
Range, bytes sent), ``server.repo(id)`` (read-only view:
branches, tags, files at a revision, commit count). Fixtures: fixtures.py.
"""

from .server import HubServer

__all__ = ["HubServer"]

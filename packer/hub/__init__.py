"""Publishing bundles and pinning them: the Hugging Face Hub (hf.py), a directory hub (local.py),
pins and lock records (resolve.py, lock.py), a static server for directory hubs (serve.py) and
the model card (card.py).

A published version is a tag ``vX.Y.Z`` on one commit holding the whole bundle; tags never
move, so ``ORG/NAME@X.Y.Z`` and the commit sha it resolves to name the same bytes forever.
"""

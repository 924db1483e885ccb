"""Publishing a catalogue: many checkpoints at once, scheduled by Ray on one machine or a cluster.

:mod:`.jobs` reads the job file (one job per JSON line or TOML ``[[job]]`` table,
``formats/batch-job.schema.json``); :mod:`.probe` finds each job's architecture key and whether its
version is already published; :mod:`.memory` estimates a pack's peak memory, declared to Ray as the
task's ``memory`` resource; :mod:`.engine` runs the jobs on Ray: one leader per architecture key
compiles the libraries into the shared cache, then the rest of that architecture's jobs reuse them.
Each job is the ordinary pack (:func:`packer.interface.pack.pack`) followed by the ordinary publish
(:func:`packer.interface.publish.publish`); :mod:`.verb` is the `packer publish-batch` verb, so every guarantee of `packer publish` holds per job.
"""

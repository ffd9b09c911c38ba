"""An output folder: storage on any pyarrow filesystem (storage), the one reader of the manifests for everyone
(manifest), what a shard's files derive from each other (shard_files), the driver's shard writer
(shard_writer), the output lock (lock, on the conditional file operations of lock_files), resume state (state),
statistics from the manifests (stats), run.json (run_record), verify.

May import: schemas, stages (config sections, the duplicate rule), pipeline.config.
"""

"""Running a config: the stage list (stage_list), the Ray executor (ray_executor, with ray_input for the input
source and the bound on seeds in flight: the one place that imports ray.data), the local in-process executor
(local), the run itself (run: list, resume, stream into shards), what the files record about how they were made
(provenance), and the progress line (progress).

May import: schemas, stages, pipeline.config, pipeline.output, pipeline.report. Never pipeline.testing.
"""

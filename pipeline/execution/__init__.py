"""Running a config: the stage list (stage_list), the Ray executor (ray_executor, with ray_input for the input
source and the bound on seeds in flight, ray_block_stats for the cap on the block stats Ray Data keeps, and
ray_policies for the seam both use, ray_seams for the check that the Ray Data internals they use are there: the
only modules that import ray.data), the local in-process executor
(local), the run itself (run: list, resume, stream into shards, the driver's heap trimmed by driver_heap), what
the files record about how they were made (provenance), and the progress line (progress).

May import: schemas, stages, pipeline.config, pipeline.output, pipeline.report. Never pipeline.testing.
"""

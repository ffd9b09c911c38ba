"""Tiny random-weight models of every backend, built offline for tests and the mini-run (tiny_models), and
registered as the ``tiny:NAME`` reference scheme. The run path never imports this package: the command line,
tests and benchmarks do.

May import: schemas, stages, pipeline.config.
"""

"""Ingest: the ``input`` section (config), listing seeds on the driver (listing), reading their bytes and
the dedupe pass (reading), and the stage that decodes them into seed rows (decode).

May import: schemas, stages.base, stages.utils.
"""

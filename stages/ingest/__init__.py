"""Ingest: the ``input`` section (config), listing seeds on the driver (listing, kept as columns by listed),
reading their bytes and naming duplicates (reading), and the stage that decodes them into seed rows and claims their content (decode).

May import: schemas, stages.base, stages.utils.
"""

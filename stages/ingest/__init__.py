"""Ingest: the ``input`` section (config), listing seeds on the driver (listing: folders; tar_listing: WebDataset
tars; parquet_list: parquet lists, confined by scope to the paths a list may name; listed: kept as columns),
reading their bytes within input.max_bytes and naming duplicates (reading), and the stage that decodes them into
seed rows and claims their content (decode).

May import: schemas, stages.base, stages.utils.
"""

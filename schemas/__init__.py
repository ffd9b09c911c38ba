"""Record types shared by every stage boundary, key formats and the shard metadata schema.

Nothing in here imports the rest of counterfactory: stages and pipeline build on it.
"""

SCHEMA_VERSION = 1

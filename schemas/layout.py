"""The names of an output's files and folders, in one place (docs/design.md, "Output layout")."""

from __future__ import annotations

from schemas.keys import shard_name

SHARDS_DIR = "shards"  # {prefix}-NNNNNN.tar: WebDataset samples, one per accepted member
SETS_DIR = "sets"  # {prefix}-NNNNNN.tar: one sample per accepted set (source image, member keys in order)
MANIFEST_DIR = "manifest"  # {prefix}-NNNNNN.parquet: one row per member candidate
THUMBS_DIR = "thumbs"  # {prefix}-NNNNNN.parquet: small JPEGs of every seed and candidate
PLOTS_DIR = "plots"
REVIEWS_DIR = "reviews"  # {reviewer}.parquet: one reviewer's verdicts (counterfactory review)
REVIEW_ORIGINALS_DIR = "reviews/originals"  # shards/ and sets/ tars as the run wrote them, before review apply
REVIEW_IMPORTED_DIR = "reviews/imported"  # {name}.parquet: verdicts files given to review apply, kept for later applies
REVIEW_APPLIED_FILE = "reviews/applied.json"  # what the last review apply used: policy, sources, agreement

RUN_FILE = "run.json"  # the config, its hash, versions, git sha, status
SIZES_FILE = "sizes.json"  # shard name -> member samples in it
STATS_FILE = "stats.json"  # counts by status, concept and axis; stage work counters
LOCK_FILE = "run.lock"  # the live run writing this output
CARD_FILE = "README.md"  # the data card
CROISSANT_FILE = "croissant.json"
PREVIEW_FILE = "preview.html"

TEMPORARY_PREFIX = ".tmp-"  # files being written; renamed into place when complete


def tar_name(prefix: str, index: int) -> str:
    return shard_name(prefix, index, "tar")


def manifest_name(prefix: str, index: int) -> str:
    """The name of a shard's manifest, and of its thumbnail index."""
    return shard_name(prefix, index, "parquet")


def manifest_name_of(tar: str) -> str:
    """``mini-000001.tar`` -> ``mini-000001.parquet``."""
    return tar[: -len(".tar")] + ".parquet"

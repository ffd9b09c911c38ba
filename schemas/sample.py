"""The JSON schema of the per-sample metadata written into shards, and its validator."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from schemas import SCHEMA_VERSION

# What every file and sample JSON names as its maker.
GENERATOR = f"counterfactory (sample schema {SCHEMA_VERSION})"
# A sample's files in a shard: {set_id}.src.jpg, {set_id}.{member_id}.jpg, {set_id}.json
SOURCE_FILE = "src.jpg"
JSON_FILE = "json"
THUMB_SOURCE_ID = "src"  # the seed's member_id in the thumbnail index


def member_file(member_id: str) -> str:
    return f"{member_id}.jpg"


SAMPLE_SCHEMA_PATH = Path(__file__).with_name("sample.schema.json")


@lru_cache(maxsize=1)
def sample_schema() -> dict:
    return json.loads(SAMPLE_SCHEMA_PATH.read_text(encoding="utf-8"))


def sample_errors(sample: dict) -> list[str]:
    """Every way ``sample`` breaks the schema, as readable lines (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(sample_schema())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(sample), key=lambda e: list(e.absolute_path))
    ]

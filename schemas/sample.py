"""The JSON schema of the per-sample metadata written into shards, and its validator."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

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

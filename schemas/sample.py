"""The two sample shapes of an output and their JSON schemas.

``shards/`` holds one sample per accepted member: ``{key}.jpg`` (the counterfactual image) and ``{key}.json``
(its labels, turns and scores), with ``key = {set_id}-{member_id}``. ``sets/`` holds, in the tar of the same
name, one sample per accepted set: ``{set_id}.jpg`` (the source image) and ``{set_id}.json`` (what the members
share, and their keys in set order). Within a family every sample has the same files and the same JSON keys,
so readers that infer a schema from the first samples (Hugging Face ``datasets``, Ray Data, Arrow) read it
whole; an ASD trainer reads ``shards/`` alone, steering and MaxSkew group members by ``set_id``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from schemas import SCHEMA_VERSION

# What every file and sample JSON names as its maker.
GENERATOR = f"counterfactory (sample schema {SCHEMA_VERSION})"
IMAGE_FILE = "jpg"  # a member sample's counterfactual image; a set sample's source image
JSON_FILE = "json"
SAMPLE_FILES = (IMAGE_FILE, JSON_FILE)  # the files of every sample, in tar order
THUMB_SOURCE_ID = "src"  # the seed's member_id in the thumbnail index


def member_key(set_id: str, member_id: str) -> str:
    return f"{set_id}-{member_id}"


def json_bytes(sample: dict) -> bytes:
    """A sample's JSON file, byte for byte as every writer makes it."""
    return json.dumps(sample, sort_keys=True, indent=1).encode("utf-8")


def attribute_list(attributes: dict[str, str]) -> list[dict[str, str]]:
    """``{"race": "asian", "gender": "female"}`` -> the samples' form, one shape whatever the axis."""
    return [{"attribute": name, "value": value} for name, value in attributes.items()]


def attribute_dict(attributes: list[dict[str, str]]) -> dict[str, str]:
    return {a["attribute"]: a["value"] for a in attributes}


SCHEMAS_DIR = Path(__file__).parent


@lru_cache(maxsize=2)
def _schema(name: str) -> dict:
    return json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def _errors(sample: dict, schema: str) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema(schema))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(sample), key=lambda e: list(e.absolute_path))
    ]


def member_errors(sample: dict) -> list[str]:
    """Every way a member sample's JSON breaks its schema, as readable lines (empty when valid)."""
    return _errors(sample, "member")


def set_errors(sample: dict) -> list[str]:
    """Every way a set sample's JSON breaks its schema, as readable lines (empty when valid)."""
    return _errors(sample, "set")

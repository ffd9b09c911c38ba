"""Key formats: seed ids, set ids, member ids, shard names and deterministic noise seeds.

WebDataset splits a file name at its first dot, so no key may contain one. Every key is drawn from
``[a-z0-9_-]`` and validated where it is made.
"""

from __future__ import annotations

import hashlib
import re

# \Z, not $: "$" also matches before a trailing newline, which would let "key\n" through.
KEY_PATTERN = re.compile(r"\A[a-z0-9_-]+\Z")
VALUE_ID_PATTERN = re.compile(r"\A[a-z0-9_]+\Z")
MAX_KEY_LENGTH = 200


class KeyFormatError(ValueError):
    """A key that breaks the key format."""


def validate_key(key: str, what: str = "key") -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise KeyFormatError(f"{what} {key!r} must match [a-z0-9_-]+ (no dots, no upper case, no spaces)")
    if len(key) > MAX_KEY_LENGTH:
        raise KeyFormatError(f"{what} {key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
    return key


def content_seed_id(data: bytes) -> str:
    """A stable seed id from the image bytes: the same file gets the same id wherever it lives."""
    return "s" + hashlib.sha256(data).hexdigest()[:20]


def set_id(seed_id: str, axis: str) -> str:
    return validate_key(f"{seed_id}-{axis}", "set_id")


def member_id(values: list[str]) -> str:
    """``['asian', 'female'] -> 'asian-female'``: value ids joined in the axis' attribute order."""
    for value in values:
        if not VALUE_ID_PATTERN.match(value):
            raise KeyFormatError(f"attribute value id {value!r} must match [a-z0-9_]+")
    return validate_key("-".join(values), "member_id")


def noise_seed(run_seed: int, set_key: str, candidate: int) -> int:
    """The seed of every random draw for one candidate of one set.

    A 63-bit hash of (run seed, set id, candidate index): never the batch position or a global RNG,
    so a set renders the same pixels however sets are batched or spread over workers. Members of a
    set share it, which gives them shared initial noise.
    """
    digest = hashlib.sha256(f"{int(run_seed)}:{set_key}:{int(candidate)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def shard_name(prefix: str, index: int, extension: str) -> str:
    validate_key(prefix, "shard prefix")
    return f"{prefix}-{index:06d}.{extension}"


SHARD_NAME_PATTERN = re.compile(r"\A(?P<prefix>[a-z0-9_-]+)-(?P<index>\d{6})\.(?P<ext>tar|parquet)\Z")


def parse_shard_name(name: str) -> tuple[str, int, str]:
    match = SHARD_NAME_PATTERN.match(name)
    if not match:
        raise KeyFormatError(f"{name!r} is not a shard name of the form PREFIX-NNNNNN.tar|parquet")
    return match["prefix"], int(match["index"]), match["ext"]

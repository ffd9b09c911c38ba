"""The config hash: what decides a run's bytes, so an output is only ever resumed by the same config."""

from __future__ import annotations

import hashlib
import json

from pipeline.config.sections import PipelineConfig
from pipeline.config.typed import to_plain
from schemas.taxonomy import Taxonomy

# Settings that change where and how fast a run goes, never what it makes.
_NOT_HASHED = {"resources", "threads", "device", "address", "num_cpus", "num_gpus", "output", "name", "report", "card"}


def _strip(plain):
    """``plain`` without the settings above; a section left empty by that (``encode``: resources only)
    goes too, so adding such a section never changes the hash of existing configs."""
    if isinstance(plain, dict):
        out = {}
        for key, value in plain.items():
            if key in _NOT_HASHED:
                continue
            stripped = _strip(value)
            if isinstance(value, dict) and value and not stripped:
                continue
            out[key] = stripped
        return out
    if isinstance(plain, (list, tuple)):
        return [_strip(v) for v in plain]
    return plain


def config_hash(config: PipelineConfig, taxonomy: Taxonomy) -> str:
    plain = _strip(to_plain(config))
    plain.pop("ray", None)
    plain["taxonomy"] = to_plain(taxonomy)
    blob = json.dumps(plain, sort_keys=True, default=list).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]

"""run.json: the config, its hash, the versions and code that ran, the status of the run."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from pipeline.config.loading import LoadedConfig
from pipeline.config.typed import to_plain
from schemas import SCHEMA_VERSION


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("counterfactory", "ray", "torch", "diffusers", "transformers", "open_clip_torch", "webdataset", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def json_bytes(data) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def run_record(loaded: LoadedConfig, status: str, **extra) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "config_path": loaded.path,
        "config_hash": loaded.config_hash,
        "config": to_plain(loaded.config),
        "concept_words": {c.id: c.words for c in loaded.taxonomy.concepts.values()},  # for evaluate's prompts
        "versions": _versions(),
        "git_sha": _git_sha(),
        "command": sys.argv,
        **extra,
    }

"""Reading a listed seed's bytes (a file, a ranged read inside a tar); the duplicate reason."""

from __future__ import annotations

import hashlib
import os
import tarfile

import fsspec

from stages.utils.errors import describe_error
from stages.utils.imaging import SeedImageError


def error_seed_id(row: dict) -> str:
    """Inputs that never decoded still need a key: a hash of where they came from."""
    where = f"{row['source_uri']}\0{row.get('source_member') or ''}\0{row['seed_index']}"
    return "e" + hashlib.sha256(where.encode("utf-8", errors="surrogateescape")).hexdigest()[:20]


def duplicate_reason(first_index: int) -> str:
    """Why a seed whose image repeats an earlier one gets no sets of its own."""
    return f"duplicate: same image as seed_index {first_index}"


def is_duplicate(reason: str | None) -> bool:
    return (reason or "").startswith("duplicate:")


def read_source_bytes(row: dict, fs_options: dict | None = None) -> bytes:
    """The seed's bytes; ``fs_options`` are fsspec's for its URI (IngestConfig.fs_options)."""
    uri = row["source_uri"]
    fs_options = fs_options or {}
    if row.get("source_error"):
        raise SeedImageError(row["source_error"])
    if not uri:
        raise SeedImageError("no path given for this input")
    member = row.get("source_member")
    try:
        if row.get("source_path") is not None:  # a local name that is not valid UTF-8
            with open(os.fsdecode(row["source_path"]), "rb") as handle:
                return handle.read()
        if member is None:
            with fsspec.open(uri, "rb", **fs_options) as handle:
                return handle.read()
        if member.endswith(".<no image>"):
            raise SeedImageError("webdataset sample has no image file")
        if row.get("source_offset") is None:
            raise SeedImageError(f"tar member {member!r} has no recorded offset")
        # A ranged read at the offset found while listing: no re-scan of the tar per seed.
        with fsspec.open(uri, "rb", **fs_options) as handle:
            handle.seek(row["source_offset"])
            data = handle.read(row["source_size"])
        if len(data) != row["source_size"]:
            raise SeedImageError(f"tar member {member!r} is cut short ({len(data)} of {row['source_size']} bytes)")
        return data
    except SeedImageError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError, KeyError, tarfile.TarError, OSError) as exc:
        raise SeedImageError(f"cannot read input ({describe_error(exc)})") from None

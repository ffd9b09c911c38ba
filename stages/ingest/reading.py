"""Reading a listed seed's bytes (a file, a ranged read inside a tar), and the dedupe pass over them."""

from __future__ import annotations

import hashlib
import os
import tarfile

import fsspec
import pyarrow as pa

from schemas import keys
from schemas.records import SEED_REF, rows_to_table
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


def read_source_bytes(row: dict) -> bytes:
    uri = row["source_uri"]
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
            with fsspec.open(uri, "rb") as handle:
                return handle.read()
        if member.endswith(".<no image>"):
            raise SeedImageError("webdataset sample has no image file")
        if row.get("source_offset") is None:
            raise SeedImageError(f"tar member {member!r} has no recorded offset")
        # A ranged read at the offset found while listing: no re-scan of the tar per seed.
        with fsspec.open(uri, "rb") as handle:
            handle.seek(row["source_offset"])
            data = handle.read(row["source_size"])
        if len(data) != row["source_size"]:
            raise SeedImageError(f"tar member {member!r} is cut short ({len(data)} of {row['source_size']} bytes)")
        return data
    except SeedImageError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError, KeyError, tarfile.TarError, OSError) as exc:
        raise SeedImageError(f"cannot read input ({describe_error(exc)})") from None


def content_ids(batch: pa.Table) -> pa.Table:
    """SEED_REF batch -> (seed_index, content_id): the dedupe pre-pass; unreadable inputs get null."""
    ids = []
    for row in batch.to_pylist():
        try:
            ids.append(None if row.get("source_error") else keys.content_seed_id(read_source_bytes(row)))
        except Exception:  # decode will report it
            ids.append(None)
    return pa.table({"seed_index": batch.column("seed_index"), "content_id": pa.array(ids, pa.string())})


def mark_duplicates(refs: pa.Table, content: dict[int, str], seen: dict[str, int]) -> pa.Table:
    """Listing rows whose bytes repeat an earlier seed get a listing error naming it; the copy keeps
    the original's content id as its seed id, so both are found under one key."""
    rows = refs.to_pylist()
    first = dict(seen)
    for row in rows:
        cid = content.get(row["seed_index"])
        if cid is None:
            continue
        earlier = first.setdefault(cid, row["seed_index"])
        if earlier != row["seed_index"]:
            row["source_error"] = duplicate_reason(earlier)
            row["source_seed_id"] = cid
    return rows_to_table(rows, SEED_REF)



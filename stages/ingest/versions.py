"""What version of each listed file a run reads: the object's ETag, generation or Hub blob id, or a local file's
mtime and size. Recorded in the manifest (``source_version``), so that a resumed run sees an input that was
replaced under the same name (a re-uploaded tar, a Hub branch that moved) instead of reading other bytes at the
offsets it recorded.

Found on the driver after listing, one stat per local file and one listing per remote folder (``ls`` with details;
a folder holding only a few listed files gets an ``info`` per file instead). A file that cannot be looked at has
no version (null): decode reports why it cannot be read.
"""

from __future__ import annotations

import os
import posixpath
from collections import defaultdict

import fsspec
import pyarrow as pa

from stages.ingest.config import GENERATED_URI, IngestConfig

# The fields that name one version of an object, by filesystem, in order of preference: S3's ETag, GCS's
# generation, the Hugging Face Hub's git blob id (a moved branch gives a new one), Azure's etag.
VERSION_FIELDS = ("ETag", "etag", "generation", "blob_id", "md5Hash", "sha256")
TIME_FIELDS = ("LastModified", "last_modified", "mtime", "updated", "last_commit")
FEW_FILES = 8  # listed files in a remote folder below which each is looked up alone


def local_version(path) -> str | None:
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    return f"mtime_ns={found.st_mtime_ns} size={found.st_size}"


def remote_version(info: dict) -> str | None:
    """One version string from an fsspec ``info`` dict (None: it names no version)."""
    for name in VERSION_FIELDS:
        value = info.get(name)
        if value not in (None, ""):
            return f"{name}={str(value).strip(chr(34))}"
    for name in TIME_FIELDS:
        value = info.get(name)
        if value not in (None, ""):
            return f"{name}={value} size={info.get('size')}"
    return None


def _remote_versions(uris: list[str], options: dict) -> dict[str, str | None]:
    fs, _ = fsspec.core.url_to_fs(uris[0], **options)
    fs.invalidate_cache()  # fsspec keeps a filesystem (and what it listed) per process: ask again
    by_folder: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for uri in uris:
        path = fs._strip_protocol(uri)
        by_folder[posixpath.dirname(path)].append((uri, path))
    out: dict[str, str | None] = {}
    for folder, entries in by_folder.items():
        listed: dict[str, dict] = {}
        if len(entries) > FEW_FILES:
            try:
                listed = {fs._strip_protocol(i["name"]): i for i in fs.ls(folder, detail=True)}
            except Exception:  # noqa: BLE001 - the filesystems raise their own kinds; looked up one by one then
                listed = {}
        for uri, path in entries:
            info = listed.get(path)
            if info is None:
                try:
                    info = fs.info(path)
                except Exception:  # noqa: BLE001 - missing or unreadable: decode says why
                    info = None
            out[uri] = remote_version(info) if info else None
    return out


def with_source_versions(seed_refs: pa.Table, config: IngestConfig) -> pa.Table:
    """``seed_refs`` with ``source_version`` filled for every listed file (the tar, for a tar's members)."""
    if config.kind == "generate" or not seed_refs.num_rows:
        return seed_refs
    uris = seed_refs.column("source_uri").to_pylist()
    raw = seed_refs.column("source_path").to_pylist()
    versions: dict = {}
    remote: dict[str, list[str]] = defaultdict(list)
    for uri, path in zip(uris, raw):
        key = path if path is not None else uri
        if key in versions or not uri or uri.startswith(GENERATED_URI):
            continue
        if path is not None or "://" not in uri or uri.startswith("file://"):
            versions[key] = local_version(os.fsdecode(path) if path is not None else uri.removeprefix("file://"))
        else:
            versions[key] = None
            remote[uri.split("://", 1)[0]].append(uri)
    for protocol_uris in remote.values():
        try:
            versions.update(_remote_versions(protocol_uris, config.fs_options(protocol_uris[0])))
        except Exception:  # noqa: BLE001 - no filesystem for it here: decode reports that per seed
            pass
    column = pa.array([versions.get(path if path is not None else uri) for uri, path in zip(uris, raw)], pa.string())
    index = seed_refs.schema.get_field_index("source_version")
    return seed_refs.set_column(index, "source_version", column)

"""What a shard's files derive from each other, in one place: the manifest's shard columns (``shard``,
``sample_key``, ``file``), the tars' sha256 in the manifest's schema metadata, a shard's size in sizes.json.
The shard writer writes a shard through here and ``review apply`` rewrites one through here, so the two
cannot drift apart.

Tars are byte-for-byte reproducible (fixed mtimes, owners, the given order), hashed while they stream out,
and renamed into place whole; the manifest is written last.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.output.manifest import check_keys
from pipeline.output.storage import Storage
from schemas.layout import MANIFEST_DIR
from schemas.records import MANIFEST, in_shards, rows_to_table
from schemas.sample import IMAGE_FILE, member_key

# The manifest's schema metadata records both tars' sha256 (Croissant needs them; verify checks them), taken
# while the tars stream out, so no report has to read every shard again.
SHARD_SHA256 = b"counterfactory.shard_sha256"
SET_SHA256 = b"counterfactory.set_sha256"
# After a review apply, the sha256 of the run's own tars it kept under reviews/originals/ (the tars in place
# are then rebuilt ones): how the next apply knows those copies are still the ones of this shard.
ORIGINAL_SHARD_SHA256 = b"counterfactory.original_shard_sha256"
ORIGINAL_SET_SHA256 = b"counterfactory.original_set_sha256"
MANIFEST_COMPRESSION = "zstd"


def shard_columns(set_id: str, member_id: str, tar: str | None) -> dict:
    """A manifest row's ``shard``, ``sample_key`` and ``file``: the member's tar, key and image file when it is
    in the shards (``tar`` given), all null when it is not."""
    if tar is None:
        return {"shard": None, "sample_key": None, "file": None}
    key = member_key(set_id, member_id)
    return {"shard": tar, "sample_key": key, "file": f"{key}.{IMAGE_FILE}"}


def shard_size(rows: Iterable[dict]) -> int:
    """A shard's entry in sizes.json: the member samples its manifest puts in its tar."""
    return len({row["sample_key"] for row in rows if in_shards(row)})


def checksums(metadata: dict | None, original: bool = False) -> tuple[str, str]:
    """``(shards/ tar sha256, sets/ tar sha256)`` from a manifest's schema metadata ('' when not recorded); with
    ``original`` those of the run's tars that review apply kept under reviews/originals/."""
    metadata = metadata or {}
    keys = (ORIGINAL_SHARD_SHA256, ORIGINAL_SET_SHA256) if original else (SHARD_SHA256, SET_SHA256)
    return tuple(metadata.get(key, b"").decode() for key in keys)


def manifest_table(rows: list[dict], shard_sha256: str, set_sha256: str,
                   originals: tuple[str, str] | None = None) -> pa.Table:
    """A shard's manifest, with its tars' checksums (and the originals' after a review) in the schema metadata."""
    metadata = {SHARD_SHA256: shard_sha256, SET_SHA256: set_sha256}
    if originals is not None:
        metadata.update({ORIGINAL_SHARD_SHA256: originals[0], ORIGINAL_SET_SHA256: originals[1]})
    return rows_to_table(rows, MANIFEST).replace_schema_metadata(metadata)


def write_manifest(storage: Storage, name: str, table: pa.Table) -> None:
    """A shard's manifest, its keys checked as every reader checks them (no writer leaves one a reader refuses)."""
    check_keys(table, name)
    with storage.open_atomic(MANIFEST_DIR, name) as stream:
        pq.write_table(table, stream, compression=MANIFEST_COMPRESSION)


class _Hashing:
    """A write-only stream that hashes what passes through it."""

    def __init__(self, stream):
        self.stream, self.digest, self.written = stream, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.written += len(data)
        return self.stream.write(data)

    def tell(self) -> int:
        return self.written


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_tar(storage: Storage, folder: str, name: str, files: Iterable[tuple[str, bytes]]) -> str:
    """Write a reproducible tar (fixed mtimes, owners, the given order) atomically; returns its sha256."""
    with storage.open_atomic(folder, name) as stream, \
            tarfile.open(fileobj=(hashing := _Hashing(stream)), mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file_name, data in files:
            _add_file(tar, file_name, data)
    return hashing.digest.hexdigest()


def file_sha256(storage: Storage, *parts: str) -> str:
    """A stored file's sha256, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with storage.fs.open_input_stream(storage.path(*parts)) as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()

"""Reading a listed seed's bytes (a file, a ranged read inside a tar); the duplicate reason."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile

import fsspec

from stages.ingest.config import DEFAULT_MAX_BYTES
from stages.ingest.scope import is_local_fs
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


def _too_large(size: int, max_bytes: int) -> SeedImageError:
    return SeedImageError(f"input is {size} bytes, over input.max_bytes={max_bytes}")


def _read_local(path: str, max_bytes: int) -> bytes:
    """A local file's bytes: refused from its size, or for not being a regular file, before it is opened."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise SeedImageError("a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise SeedImageError(f"not a regular file ({_file_kind(info.st_mode)}); nothing was read from it")
    if info.st_size > max_bytes:
        raise _too_large(info.st_size, max_bytes)
    # O_NONBLOCK: a FIFO put in the file's place since the stat cannot block the worker either
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SeedImageError("not a regular file; nothing was read from it")
        data = handle.read(info.st_size + 1)  # what stat said, and a byte to see it grow
    if len(data) > info.st_size:  # a file written while read, or a /proc file (its size says 0)
        raise SeedImageError(f"input grew past its size on disk ({info.st_size} bytes) while it was read")
    return data


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a plain file"


def _bounded_read(handle, max_bytes: int) -> bytes:
    """At most max_bytes: a file that grew, or a server that sent no size, is refused, not read whole."""
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SeedImageError(f"input is over input.max_bytes={max_bytes} bytes")
    return data


def _read_uri(uri: str, fs_options: dict, size: int | None, max_bytes: int) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri, **fs_options)
    if is_local_fs(fs):
        return _read_local(path, max_bytes)
    if size is not None and size > max_bytes:  # the size the listing found
        raise _too_large(size, max_bytes)
    with fs.open(path, "rb") as handle:
        size = getattr(handle, "size", None)  # fsspec's files know it from the object's info, before any read
        if size is not None and size > max_bytes:
            raise _too_large(size, max_bytes)
        return _bounded_read(handle, max_bytes)


def read_source_bytes(row: dict, fs_options: dict | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The seed's bytes; ``fs_options`` are fsspec's for its URI (IngestConfig.fs_options). A seed over
    ``max_bytes`` is refused from its listed or stored size before its bytes are read."""
    uri = row["source_uri"]
    fs_options = fs_options or {}
    if row.get("source_error"):
        raise SeedImageError(row["source_error"])
    if not uri:
        raise SeedImageError("no path given for this input")
    member = row.get("source_member")
    try:
        if row.get("source_path") is not None:  # a local name that is not valid UTF-8
            return _read_local(os.fsdecode(row["source_path"]), max_bytes)
        if member is None:
            return _read_uri(uri, fs_options, row.get("source_size"), max_bytes)
        if member.endswith(".<no image>"):
            raise SeedImageError("webdataset sample has no image file")
        if row.get("source_offset") is None:
            raise SeedImageError(f"tar member {member!r} has no recorded offset")
        if row["source_size"] > max_bytes:  # the tar header's size
            raise SeedImageError(f"tar member {member} is {row['source_size']} bytes, over input.max_bytes={max_bytes}")
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

"""Output storage through pyarrow filesystems: a local path or any URI pyarrow knows (``s3://...``).

Files are written under a temporary name and renamed when complete, so a crash never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from contextlib import contextmanager

import pyarrow.fs as pafs

from schemas.layout import TEMPORARY_PREFIX


class Storage:
    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None):
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.rstrip("/")
        elif "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.root = self.root.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.uri = uri

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list(self, *parts: str) -> list[str]:
        """Names of the files directly inside a folder (empty when the folder does not exist)."""
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in info if i.type == pafs.FileType.File)

    def entries(self, *parts: str) -> list[str]:
        """Names of everything directly inside a folder, files and folders (empty when it does not exist)."""
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in info)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as handle:
            return handle.read()

    def open_input(self, *parts: str):
        return self.fs.open_input_file(self.path(*parts))

    @contextmanager
    def open_atomic(self, *parts: str, buffer_size: int = 1 << 20):
        """A writable stream whose file appears under its final name only once the block ends
        without an error; on an error the temporary file is removed."""
        final = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        temporary = posixpath.join(posixpath.dirname(final), f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")
        try:
            with self.fs.open_output_stream(temporary, compression=None, buffer_size=buffer_size) as handle:
                yield handle
        except BaseException:
            try:
                self.fs.delete_file(temporary)
            except OSError:
                pass  # remove_temporaries() clears it on the next run
            raise
        self.fs.move(temporary, final)

    def write_atomic(self, data: bytes, *parts: str) -> None:
        with self.open_atomic(*parts, buffer_size=0) as handle:
            handle.write(data)

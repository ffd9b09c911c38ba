"""Which paths a parquet list may name: those on its own filesystem (a local list: local paths; a list on a
bucket or a hub: that protocol, ``s3://`` for ``s3://``; a list on http(s): its own host), and those under
``input.allow_paths``. Any other path is listed with the problem, so that it ends as an error row and not one
of its bytes is read: a list on a bucket cannot make a worker read ``/etc/hostname`` or a cloud metadata URL.
"""

from __future__ import annotations

import functools
import os
import posixpath
from urllib.parse import urlsplit

LOCAL = "file"
_WEB = "http"


@functools.lru_cache(maxsize=64)
def canonical_protocol(protocol: str) -> str:
    """One name per filesystem: ``s3a`` is ``s3``, ``gcs`` is ``gs``, ``https`` is ``http``, ``local`` is ``file``."""
    protocol = protocol.lower()
    try:
        import fsspec

        names = fsspec.get_filesystem_class(protocol).protocol
    except Exception:  # unknown here, or its package is not installed: only its own name matches it
        return protocol
    names = (names,) if isinstance(names, str) else tuple(names)
    return LOCAL if LOCAL in names else _WEB if _WEB in names else names[0]


def is_local_fs(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def split_uri(uri: str) -> tuple[str, str]:
    """``(canonical protocol, the rest)``; a path without a protocol is local."""
    if "://" not in uri:
        return LOCAL, uri
    protocol, rest = uri.split("://", 1)
    return canonical_protocol(protocol), rest


class ListScope:
    """What one list may name. ``list_uri`` is the list (file or folder) as configured."""

    def __init__(self, list_uri: str, allow_paths: list[str] | tuple[str, ...] = ()):
        self.protocol, rest = split_uri(list_uri)
        self.host = urlsplit(list_uri).netloc.lower() if self.protocol == _WEB else None
        self.own = f"{self.protocol}://{self.host}/" if self.host else f"{self.protocol}://"
        self.roots = [self._root(root) for root in allow_paths]

    @staticmethod
    def _root(root: str) -> tuple[str, str]:
        protocol, rest = split_uri(root)
        if protocol == LOCAL:
            return protocol, os.path.realpath(rest)
        return protocol, posixpath.normpath(rest).rstrip("/")

    def problem(self, uri: str) -> str | None:
        """None when the list may name ``uri``; otherwise the error row's reason, naming the path."""
        if "::" in uri:
            return f"path {uri} is a chained URL (::); a list names plain paths only"
        protocol, rest = split_uri(uri)
        if protocol == self.protocol and (self.host is None or urlsplit(uri).netloc.lower() == self.host):
            return None
        for root_protocol, root in self.roots:
            if root_protocol != protocol:
                continue
            if protocol == LOCAL:
                candidate = os.path.realpath(rest)  # symlinks resolved: a link under the root may lead out of it
            else:
                candidate = posixpath.normpath(rest)
            if candidate == root or candidate.startswith(root.rstrip("/") + "/"):
                return None
        return (f"path {uri} is outside what this list may name (paths on its own filesystem, {self.own}); "
                "add a root above it to input.allow_paths to read it")

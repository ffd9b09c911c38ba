"""Listing WebDataset tars: one seed per sample (the members sharing a key, ``a.jpg`` + ``a.txt``), read later
by offset; every image-named member that is not a sample's one image is listed too, with the reason, so that
nothing in a tar vanishes: a second ``a.jpg``, a second image of sample ``a``, links, devices, sparse files.

Only tar headers and the small metadata members (captions, JSON) are read here."""

from __future__ import annotations

import json
import posixpath
import tarfile

import fsspec

from stages.ingest.config import IMAGE_EXTENSIONS, IngestConfig
from stages.ingest.listed import ListedSeeds

METADATA_EXTENSIONS = ("txt", "caption", "json")
MAX_METADATA_BYTES = 1_000_000


def _not_readable(member: tarfile.TarInfo) -> str | None:
    """Why a member's bytes cannot be a seed read by offset, or None for a plain file."""
    if member.issym():
        return f"tar member {member.name} is a symlink (to {member.linkname}); links are not followed"
    if member.islnk():
        return f"tar member {member.name} is a hard link (to {member.linkname}); links are not followed"
    if member.isdir():
        return f"tar member {member.name} is a folder, not an image file"
    if not member.isfile():
        return f"tar member {member.name} is not a regular file (a device or a FIFO)"
    if member.issparse():
        return f"tar member {member.name} is a sparse file; its bytes cannot be read by offset"
    return None


def _key_and_ext(name: str) -> tuple[str, str] | None:
    base = posixpath.basename(name)
    if "." not in base:
        return None
    return posixpath.join(posixpath.dirname(name), base.split(".", 1)[0]), base.split(".", 1)[1].lower()


def _read_metadata(tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, sample: dict) -> None:
    text = tar.extractfile(member).read().decode("utf-8", errors="replace")
    if ext != "json":
        sample["caption"] = text.strip()
        return
    try:
        meta = json.loads(text)
    except ValueError:
        meta = {}
    if isinstance(meta, dict):
        sample.setdefault("concept", meta.get("concept"))
        sample.setdefault("caption", meta.get("caption"))


def _list_one_tar(tar: tarfile.TarFile) -> list[dict]:
    """The tar's entries in order: samples (``image`` and metadata) and refused members (``member``, ``error``)."""
    entries: list[dict] = []
    samples: dict[str, dict] = {}
    for member in tar:
        parts = _key_and_ext(member.name)
        problem = _not_readable(member)
        if problem is not None:
            if not member.isdir() or (parts is not None and parts[1] in IMAGE_EXTENSIONS):
                entries.append({"member": member.name, "error": problem})  # plain folders are no entries
            continue
        if parts is None:
            continue  # no extension: not part of any sample (a LICENSE)
        key, ext = parts
        if key not in samples:
            samples[key] = {"key": key, "image": None}
            entries.append(samples[key])
        sample = samples[key]
        if ext in IMAGE_EXTENSIONS:
            if sample["image"] is None:
                sample["image"], sample["offset"], sample["size"] = member.name, member.offset_data, member.size
                continue
            if member.name == sample["image"]:
                error = f"tar member {member.name} appears twice in this tar; the first is read"
            else:
                error = (f"tar member {member.name} is a second image of sample {key} "
                         f"(the first, {sample['image']}, is read)")
            entries.append({"member": member.name, "offset": member.offset_data, "size": member.size, "error": error})
        elif ext in METADATA_EXTENSIONS and member.size < MAX_METADATA_BYTES:
            _read_metadata(tar, member, ext, sample)
    return entries


def list_webdataset(config: IngestConfig, tar_paths: list[str]) -> ListedSeeds:
    listed = ListedSeeds()
    for tar_path in tar_paths:
        with fsspec.open(tar_path, "rb", **config.fs_options(tar_path)) as handle:
            try:
                tar = tarfile.open(fileobj=handle, mode="r|")  # plain tar only: seeds are read by offset
            except tarfile.ReadError as exc:
                raise ValueError(f"input.path: {tar_path} is not an uncompressed tar ({exc})") from None
            try:
                entries = _list_one_tar(tar)
            except tarfile.TarError as exc:
                raise ValueError(f"input.path: {tar_path} is cut short or damaged ({exc}); write it again") from None
        for entry in entries:
            if "error" in entry:
                listed.add(tar_path, source_member=entry["member"], source_offset=entry.get("offset"),
                           source_size=entry.get("size"), source_error=entry["error"])
                continue
            # A sample without an image is still listed: decode turns it into an error row.
            listed.add(tar_path, source_member=entry["image"] or f"{entry['key']}.<no image>",
                       concept=entry.get("concept"), caption=entry.get("caption"),
                       source_offset=entry.get("offset"), source_size=entry.get("size"))
    return listed

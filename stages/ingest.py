"""Ingest: list seed images from a folder, WebDataset tars or a parquet list, then decode them.

Listing runs once on the driver and reads no image bytes (only tar headers and the small metadata
files beside images in tars). Decoding runs in the stage: every listed input comes out as one row,
either a normalised RGB seed or ``status=error`` with the reason, so nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import keys
from schemas.records import SEED, SEED_REF, STATUS_ERROR, STATUS_OK, rows_to_table
from stages import faults
from stages.imaging import SeedImageError, decode_seed_image, describe_error, to_raw
from stages.phrasing import fix_articles
from stages.resources import Resources

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


@dataclass
class IngestConfig:
    kind: Literal["folder", "webdataset", "parquet", "generate"] = "folder"
    path: str = ""  # folder, tar file, folder of tars, brace pattern of tars, or parquet file
    # generate: no seed photos; one seed per concept x prompt template x seeds_per_prompt, whose caption is
    # the template filled with the concept ("a photo of {a_concept}" -> "a photo of a chef")
    prompts: list[str] = field(default_factory=lambda: ["a photo of {a_concept}"])
    seeds_per_prompt: int = 1
    max_pixels: int = 40_000_000  # larger images are refused (decompression bombs)
    min_side: int = 16
    max_side: int = 1024  # longer side is scaled down to this
    concept_from_folder: bool = True  # folder input: a sub-folder named after a concept labels its images
    dedupe: bool = True  # hash every input first so a repeated image is edited once, not once per copy
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=0.5, batch_size=16))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.kind == "generate":
            return found + _prompt_problems(self.prompts, self.seeds_per_prompt)
        if not self.path:
            found.append(("path", "is required"))
        if self.min_side < 1 or self.max_side < self.min_side:
            found.append(("max_side", "must be >= min_side >= 1"))
        if self.max_pixels < self.min_side * self.min_side:
            found.append(("max_pixels", "must allow at least a min_side x min_side image"))
        return found


PROMPT_FIELDS = ("concept", "a_concept")
GENERATED_URI = "generate:"  # source_uri prefix of seeds made from text


def _prompt_problems(prompts: list[str], seeds_per_prompt: int) -> list[tuple[str, str]]:
    import string

    found = []
    if not prompts:
        found.append(("prompts", "must list at least one template"))
    for i, template in enumerate(prompts):
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as exc:
            found.append((f"prompts[{i}]", f"is not a valid template ({exc})"))
            continue
        unknown = names - set(PROMPT_FIELDS)
        if unknown:
            found.append((f"prompts[{i}]", f"unknown placeholder(s) {sorted(unknown)}; allowed: {{concept}}, {{a_concept}}"))
        elif not names:
            found.append((f"prompts[{i}]", "must contain {concept} or {a_concept}"))
    if seeds_per_prompt < 1:
        found.append(("seeds_per_prompt", "must be >= 1"))
    return found


def base_prompt(template: str, concept_words: str) -> str:
    """``"a photo of {a_concept}"`` + ``"office worker"`` -> ``"a photo of an office worker"``."""
    return fix_articles(template.format(concept=concept_words, a_concept=f"a {concept_words}"))


def _list_generated(config: IngestConfig, concepts) -> list[dict]:
    """Generate mode: one seed per concept x template x seeds_per_prompt, its caption the base prompt."""
    refs = []
    for concept in concepts:
        for t, template in enumerate(config.prompts):
            prompt = base_prompt(template, concept.words)
            for k in range(config.seeds_per_prompt):
                seed_id = f"{concept.id}-p{t}-{k}"
                refs.append(_ref(GENERATED_URI + seed_id, None, source_seed_id=seed_id, concept=concept.id, caption=prompt))
    return refs


def _ref(source_uri: str, member: str | None = None, **extra) -> dict:
    ref = {"source_uri": source_uri, "source_member": member, **extra}
    if ref.get("concept"):
        ref["concept_source"] = "source"
    return ref


def _is_local(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def _full_uri(fs, path: str) -> str:
    """Local files keep plain paths; remote ones get their protocol back."""
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _is_image_name(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def _display(path: str) -> tuple[str, bytes | None]:
    """A path as valid UTF-8 text for manifests, plus its exact bytes when the text had to escape them."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return raw.decode("utf-8", errors="backslashreplace"), raw


def _list_local_folder(config: IngestConfig) -> list[dict]:
    """Every image-named entry under the root, and every entry that only looks like one.

    Symlinks that lead outside the root, and folders named like images, are listed with the problem
    so that they end as error rows instead of vanishing; hidden files and folders are skipped.
    """
    root = config.path
    if not os.path.isdir(root):
        raise FileNotFoundError(f"input.path {config.path!r} is not a folder")
    real_root = os.path.realpath(root)
    entries: list[tuple[str, str | None]] = []  # (relative path, listing problem)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".")]
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                entries.append((os.path.join(rel_dir, name), "symlink points outside the input folder"))
            elif _is_image_name(name):
                entries.append((os.path.join(rel_dir, name), "a folder, not an image file"))
        for name in filenames:
            if name.startswith(".") or not _is_image_name(name):
                continue
            full = os.path.join(dirpath, name)
            problem = None
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                problem = "symlink points outside the input folder"
            entries.append((os.path.join(rel_dir, name), problem))
    refs = []
    for rel, problem in sorted(entries, key=lambda e: os.fsencode(e[0])):
        text, raw = _display(os.path.join(root, rel))
        parts = rel.split(os.sep)
        concept = parts[0] if (config.concept_from_folder and len(parts) > 1) else None
        refs.append(_ref(text, concept=_display(concept)[0] if concept else None,
                         source_path=raw, source_error=problem))
    return refs


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _list_folder(config: IngestConfig) -> list[dict]:
    fs, root = fsspec.core.url_to_fs(config.path)
    if _is_local(fs):
        return _list_local_folder(config)
    if not fs.isdir(root):
        raise FileNotFoundError(f"input.path {config.path!r} is not a folder")
    refs = []
    for path in sorted(fs.find(root, withdirs=False)):
        rel = posixpath.relpath(path, root)
        if any(part.startswith(".") for part in rel.split("/")) or not _is_image_name(posixpath.basename(rel)):
            continue
        folder = posixpath.dirname(rel)
        concept = folder.split("/")[0] if (config.concept_from_folder and folder) else None
        refs.append(_ref(fs.unstrip_protocol(path), concept=concept))
    return refs


def _tar_paths(path: str) -> list[str]:
    if "{" in path:
        import braceexpand

        return list(braceexpand.braceexpand(path))
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isdir(root):
        return [_full_uri(fs, p) for p in sorted(fs.glob(posixpath.join(root, "*.tar")))]
    return [path]


def _list_webdataset(config: IngestConfig) -> list[dict]:
    refs = []
    for tar_path in _tar_paths(config.path):
        samples: dict[str, dict] = {}
        order: list[str] = []
        with fsspec.open(tar_path, "rb") as handle:
            try:
                tar = tarfile.open(fileobj=handle, mode="r|")  # plain tar only: seeds are read by offset
            except tarfile.ReadError as exc:
                raise ValueError(f"input.path: {tar_path} is not an uncompressed tar ({exc})") from None
            for member in tar:
                if not member.isfile():
                    continue
                base = posixpath.basename(member.name)
                if "." not in base:
                    continue
                key = posixpath.join(posixpath.dirname(member.name), base.split(".", 1)[0])
                ext = base.split(".", 1)[1].lower()
                if key not in samples:
                    samples[key] = {"image": None}
                    order.append(key)
                sample = samples[key]
                if ext in IMAGE_EXTENSIONS and sample["image"] is None:
                    sample["image"] = member.name
                    sample["offset"], sample["size"] = member.offset_data, member.size
                elif ext in ("txt", "caption", "json") and member.size < 1_000_000:
                    text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    if ext == "json":
                        try:
                            meta = json.loads(text)
                        except ValueError:
                            meta = {}
                        if isinstance(meta, dict):
                            sample.setdefault("concept", meta.get("concept"))
                            sample.setdefault("caption", meta.get("caption"))
                    else:
                        sample["caption"] = text.strip()
        for key in order:
            sample = samples[key]
            # A sample without an image is still listed: decode turns it into an error row.
            refs.append(
                _ref(tar_path, sample["image"] or f"{key}.<no image>", concept=sample.get("concept"),
                     caption=sample.get("caption"), source_offset=sample.get("offset"),
                     source_size=sample.get("size"))
            )
    return refs


def _list_parquet(config: IngestConfig) -> list[dict]:
    table = pq.read_table(config.path)
    columns = set(table.column_names)
    path_column = "path" if "path" in columns else "uri" if "uri" in columns else None
    if path_column is None:
        raise ValueError(f"input.path {config.path!r}: the parquet list needs a 'path' or 'uri' column")
    base = posixpath.dirname(config.path)
    refs = []
    for row in table.to_pylist():
        path = row.get(path_column)
        if isinstance(path, str) and path and "://" not in path and not posixpath.isabs(path):
            path = posixpath.join(base, path)
        refs.append(
            _ref(path if isinstance(path, str) else "", None, source_seed_id=row.get("seed_id"),
                 concept=row.get("concept"), caption=row.get("caption"))
        )
    return refs


def list_seeds(config: IngestConfig, seeds_per_shard: int, limit: int | None = None, concepts=()) -> pa.Table:
    """Every input as a SEED_REF row, in a stable order, each assigned to its output shard.
    ``concepts`` (taxonomy Concepts) are what generate mode makes base prompts for."""
    if config.kind == "generate":
        refs = _list_generated(config, concepts)
    else:
        refs = {"folder": _list_folder, "webdataset": _list_webdataset, "parquet": _list_parquet}[config.kind](config)
    if limit is not None:
        refs = refs[:limit]
    for index, ref in enumerate(refs):
        ref["seed_index"] = index
        ref["shard_index"] = index // seeds_per_shard
    return rows_to_table(refs, SEED_REF)


def _error_seed_id(row: dict) -> str:
    """Inputs that never decoded still need a key: a hash of where they came from."""
    where = f"{row['source_uri']}\0{row.get('source_member') or ''}\0{row['seed_index']}"
    return "e" + hashlib.sha256(where.encode("utf-8", errors="surrogateescape")).hexdigest()[:20]


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
            row["source_error"] = f"duplicate: same image as seed_index {earlier}"
            row["source_seed_id"] = cid
    return rows_to_table(rows, SEED_REF)


class DecodeSeeds:
    """SEED_REF batch -> SEED batch: read bytes, decode, normalise, assign ``seed_id``."""

    def __init__(self, config: IngestConfig):
        self.config = config

    def setup(self) -> None:
        pass

    def decode_row(self, row: dict) -> dict:
        out = dict(row)
        if self.config.kind == "generate":
            # generate mode: no image yet; the editor makes it from the caption (the base prompt)
            out.update(seed_id=row["source_seed_id"], image_rgb=None, width=None, height=None, status=STATUS_OK, error=None)
            return out
        try:
            faults.check_row("ingest", row)
            data = read_source_bytes(row)
            image = decode_seed_image(
                data, max_pixels=self.config.max_pixels, min_side=self.config.min_side,
                max_side=self.config.max_side,
            )
            given = row.get("source_seed_id")
            if given is not None:
                try:
                    seed_id = keys.validate_key(str(given), "seed_id")
                except keys.KeyError_ as exc:
                    raise SeedImageError(str(exc)) from None
            else:
                seed_id = keys.content_seed_id(data)
            raw, width, height = to_raw(image)
            out.update(seed_id=seed_id, image_rgb=raw, width=width, height=height, status=STATUS_OK, error=None)
        except Exception as exc:  # a bad input must not take its batch down
            reason = str(exc) if isinstance(exc, SeedImageError) else describe_error(exc)
            duplicate = (row.get("source_error") or "").startswith("duplicate")
            seed_id = row["source_seed_id"] if duplicate else _error_seed_id(row)
            out.update(seed_id=seed_id, image_rgb=None, width=None, height=None,
                       status=STATUS_ERROR, error=f"ingest: {reason}")
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        return rows_to_table([self.decode_row(row) for row in batch.to_pylist()], SEED)

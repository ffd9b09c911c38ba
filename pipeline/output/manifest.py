"""The one reader of an output's manifests (``manifest/{prefix}-NNNNNN.parquet``), for every command and reader.

Older schema versions are read by declaring them: ``VERSIONS`` lists the columns each version's first writers
wrote; a column of today's ``MANIFEST`` that a file lacks reads as ``DEFAULTS`` says (null unless named), so a
manifest written before the review columns (or the judge's) existed reads like a new one. A version not
declared here, older or newer, is refused in one line.

Every key is checked on read (schemas/keys.py): ``set_id``, ``seed_id``, ``member_id``, and for a member in
the shards ``sample_key`` (``{set_id}-{member_id}``), ``file`` (``{sample_key}.jpg``) and ``shard`` (the
manifest's own tar). A manifest that breaks one is refused whole, naming it, so no reader, export or review
apply ever builds a path or a tar member from an altered or crafted value.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.output.storage import Storage
from schemas import SCHEMA_VERSION
from schemas.keys import KeyFormatError, parse_shard_name, validate_key
from schemas.layout import MANIFEST_DIR
from schemas.records import MANIFEST, STATUS_OK
from schemas.sample import IMAGE_FILE

_V2 = ("schema_version", "set_id", "seed_id", "seed_index", "source_uri", "source_member", "axis", "concept",
       "concept_source", "member_id", "attributes", "candidate", "noise_seed", "guidance_scale", "p2p_fraction",
       "status", "reason", "set_status", "seed_status", "caption", "target_caption", "instruction", "text_image",
       "directional", "image_image", "attribute_margin", "nsfw", "shard", "sample_key", "file", "captioner", "editor",
       "clip_model", "config_hash")
# Each version's columns as its first writers wrote them (later writers of a version added columns, read as
# DEFAULTS when absent). Version 1 put other samples in shards/ (no sets/): no reader here can read its tars.
VERSIONS: dict[int, tuple[str, ...]] = {
    2: _V2,  # then caption_note, review_verdict, review_reason, reviewers
    3: _V2 + ("caption_note", "score_notes", "identity_member", "review_verdict", "review_reason", "reviewers",
              "review_votes"),  # then the judge's and drift's scores, judge_answers, judge_model
}
DEFAULTS = {"identity_member": False}  # a manifest from before identity members had none; any other column: null
KEY_COLUMNS = ("set_id", "seed_id", "member_id", "sample_key", "file", "shard")


class ManifestError(ValueError):
    """A manifest no reader may use (unreadable, an unknown version, a key that breaks the format); one line
    (the command line's exit code 3, an output refused)."""


def manifest_names(storage: Storage) -> list[str]:
    """The manifests of an output, sorted: files named like a shard's manifest (temporaries and others are not)."""
    out = []
    for name in storage.list(MANIFEST_DIR):
        try:
            if parse_shard_name(name)[2] == "parquet":
                out.append(name)
        except KeyFormatError:
            continue
    return out


def _version(table: pa.Table, name: str) -> int | None:
    if "schema_version" not in table.column_names:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: no schema_version column; not a counterfactory manifest")
    found = set(pc.unique(table.column("schema_version")).to_pylist())
    if len(found) > 1:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: rows of schema versions {sorted(found, key=str)} in one file")
    version = next(iter(found), None)
    if version is None and table.num_rows:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: schema_version is null")
    if version is not None and version not in VERSIONS and version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise ManifestError(f"{MANIFEST_DIR}/{name}: schema version {version} "
                            + ("is newer than this counterfactory reads (it reads "
                               if newer else "is no longer read (this counterfactory reads ")
                            + f"{', '.join(map(str, sorted({*VERSIONS, SCHEMA_VERSION})))})"
                            + ("; upgrade counterfactory" if newer else "; run the pipeline again into a new output"))
    return version


def _required(version: int | None) -> tuple[str, ...]:
    if version in VERSIONS:
        return VERSIONS[version]
    return tuple(MANIFEST.names) if version is not None else ("schema_version",)


def _bad(name: str, column: str, value, why: str) -> ManifestError:
    return ManifestError(f"{MANIFEST_DIR}/{name}: {column} {str(value)[:80]!r} {why}; refusing to read this output "
                         "(altered after writing? `counterfactory verify` lists what else differs)")


def check_keys(table: pa.Table, name: str) -> None:
    """Refuse a manifest whose keys break the key format or disagree with each other and with its name."""
    for column in ("set_id", "seed_id", "member_id", "sample_key"):
        for value in pc.unique(table.column(column)).to_pylist():
            if value is None and column in ("sample_key", "member_id"):
                continue
            try:
                validate_key(value, column)
            except KeyFormatError:
                raise _bad(name, column, value, "breaks the key format [a-z0-9_-]+") from None
    shard = table.column("shard")
    own = manifest_name_of_tar(name)
    placed = table.filter(pc.is_valid(shard))
    for value in pc.unique(placed.column("shard")).to_pylist():
        if value != own:
            raise _bad(name, "shard", value, f"is not this manifest's tar {own}")
    expected_key = pc.binary_join_element_wise(placed.column("set_id"), placed.column("member_id"), "-")
    for column, expected in (("sample_key", expected_key),
                             ("file", pc.binary_join_element_wise(expected_key, pa.scalar(IMAGE_FILE), "."))):
        differs = pc.invert(pc.fill_null(pc.equal(placed.column(column), expected), False))
        if pc.any(differs).as_py():
            value = placed.filter(differs).column(column)[0].as_py()
            raise _bad(name, column, value, "is not the member's key ({set_id}-{member_id}"
                       + (f".{IMAGE_FILE})" if column == "file" else ")"))
    stray = pc.unique(table.filter(pc.is_valid(table.column("file"))).column("file")).to_pylist()
    for value in stray:
        stem, dot, extension = value.partition(".")
        if dot != "." or extension != IMAGE_FILE or not _is_key(stem):
            raise _bad(name, "file", value, f"is not a member's file name KEY.{IMAGE_FILE}")


def _is_key(value: str) -> bool:
    try:
        validate_key(value)
    except KeyFormatError:
        return False
    return True


def manifest_name_of_tar(manifest: str) -> str:
    """``mini-000001.parquet`` -> ``mini-000001.tar``."""
    return manifest[: -len(".parquet")] + ".tar"


def read_manifest(storage: Storage, name: str, columns: Iterable[str] | None = None) -> pa.Table:
    """One manifest as today's ``MANIFEST`` schema (or its ``columns``), older versions filled as declared, every
    key checked; the file's schema metadata (the tars' checksums) kept."""
    wanted = list(columns) if columns is not None else list(MANIFEST.names)
    unknown = [c for c in wanted if c not in MANIFEST.names]
    if unknown:
        raise ValueError(f"columns not in the manifest schema: {unknown}")
    try:
        with storage.open_input(MANIFEST_DIR, name) as handle:
            present = set(pq.read_schema(handle).names)
            needed = [c for c in MANIFEST.names if c in present and (c in wanted or c in KEY_COLUMNS
                                                                       or c == "schema_version")]
            raw = pq.read_table(handle, columns=needed)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: unreadable manifest ({str(exc).splitlines()[0][:200]})") from None
    version = _version(raw, name)
    lacking = [c for c in _required(version) if c not in present]
    if lacking:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: schema version {version} manifest without column(s) "
                            f"{', '.join(lacking)}; it is damaged, or was not written by counterfactory")
    arrays = []
    fields = [MANIFEST.field(c) for c in dict.fromkeys([*wanted, *KEY_COLUMNS])]
    for field in fields:
        if field.name in raw.column_names:
            try:
                arrays.append(raw.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ManifestError(f"{MANIFEST_DIR}/{name}: column {field.name} is "
                                    f"{raw.schema.field(field.name).type}, not {field.type}") from None
        else:
            arrays.append(pa.array([DEFAULTS.get(field.name)] * raw.num_rows, type=field.type))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    check_keys(table, name)
    return table.select(wanted).replace_schema_metadata(raw.schema.metadata)


def read_manifests(storage: Storage, columns: Iterable[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """``(name, table)`` per manifest of the output, in name order (see read_manifest)."""
    columns = list(columns) if columns is not None else None
    for name in manifest_names(storage):
        yield name, read_manifest(storage, name, columns)


def read_all(storage: Storage, columns: Iterable[str] | None = None) -> pa.Table:
    """Every manifest's rows in one table (no schema metadata); an empty table of the schema when there are none."""
    columns = list(columns) if columns is not None else list(MANIFEST.names)
    tables = [table.replace_schema_metadata(None) for _, table in read_manifests(storage, columns)]
    if not tables:
        return pa.schema([MANIFEST.field(c) for c in columns]).empty_table()
    return pa.concat_tables(tables)


def metadata(storage: Storage, name: str) -> dict[bytes, bytes]:
    """A manifest's schema metadata (the tars' checksums, shard_files), without reading its rows."""
    try:
        with storage.open_input(MANIFEST_DIR, name) as handle:
            return dict(pq.read_schema(handle).metadata or {})
    except (OSError, pa.ArrowInvalid) as exc:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: unreadable manifest ({str(exc).splitlines()[0][:200]})") from None


def stored_columns(storage: Storage, name: str) -> list[str]:
    """The columns a manifest file holds as stored (an older version's lack some that read_manifest fills)."""
    try:
        with storage.open_input(MANIFEST_DIR, name) as handle:
            return pq.read_schema(handle).names
    except (OSError, pa.ArrowInvalid) as exc:
        raise ManifestError(f"{MANIFEST_DIR}/{name}: unreadable manifest ({str(exc).splitlines()[0][:200]})") from None


def read_raw(storage: Storage, name: str) -> pa.Table:
    """A manifest exactly as stored, unchecked: for ``verify``, which reports what differs instead of refusing."""
    with storage.open_input(MANIFEST_DIR, name) as handle:
        return pq.read_table(handle)


def group_sets(rows: Iterable[dict]) -> list[dict]:
    """One entry per set, ``{"set_id", "seed_index", "rows"}``, in seed order. A set is one seed's set: a copy of
    a seed (a duplicate) shares its set ids, as error rows, so the key is (seed_index, set_id)."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["seed_index"], row["set_id"])].append(row)
    return [{"set_id": set_id, "seed_index": seed_index, "rows": grouped[(seed_index, set_id)]}
            for seed_index, set_id in sorted(grouped)]


def sets_by_id(rows: Iterable[dict]) -> dict[str, dict]:
    """set_id -> the group_sets entry of the seed that made the set (not a later copy's error rows), in seed
    order: what review verdicts name."""
    out: dict[str, dict] = {}
    for entry in group_sets(rows):
        made = entry["rows"][0]["seed_status"] == STATUS_OK
        held = out.get(entry["set_id"])
        if held is None or (made and held["rows"][0]["seed_status"] != STATUS_OK):
            out[entry["set_id"]] = entry
    return dict(sorted(out.items(), key=lambda kv: (kv[1]["seed_index"], kv[0])))

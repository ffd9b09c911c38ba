"""What an output folder already holds: its lock (lock.py), the config it was made with, its completed shards.

A shard counts as complete only when its manifest exists (the manifest is renamed into place after
the tar) and lists exactly the seeds the current listing assigns to that shard. Anything else is redone.
A completed shard whose seeds' files changed since (another version of the object or file, another member,
offset or size in a tar) is refused rather than kept: its samples come from the old bytes. Shards beyond the
current listing (the input shrank, or a smaller ``--limit``) are refused too, and a folder holding other
things than an output is never written into.
"""

from __future__ import annotations

import json

import pyarrow as pa

from pipeline.output.lock import OutputLock, OutputRefused  # noqa: F401 (where callers import them from)
from pipeline.output.lock_files import lock_file_names
from pipeline.output.manifest import read_manifest
from pipeline.output.storage import Storage
from schemas.keys import parse_shard_name
from schemas.layout import MANIFEST_DIR, RUN_FILE, SETS_DIR, SHARDS_DIR, TEMPORARY_PREFIX, THUMBS_DIR, tar_name
from schemas.records import STATUS_OK
from stages.ingest.reading import is_duplicate

SHARD_FOLDERS = (SHARDS_DIR, SETS_DIR, MANIFEST_DIR, THUMBS_DIR)
# What a completed shard's manifest recorded of each seed's bytes, checked against the listing on resume
# (columns a manifest older than schema 4 lacks are not checked).
SOURCE_FIELDS = ("source_member", "source_offset", "source_size", "source_version")


def check_config_hash(storage: Storage, config_hash: str) -> bool:
    """True when the output already holds a run of this config; refuses one of another config, and a folder
    that is neither empty nor an output."""
    if not storage.exists(RUN_FILE):
        if storage.list(MANIFEST_DIR) or storage.list(SHARDS_DIR):
            raise OutputRefused(f"{storage.uri} holds shards but no {RUN_FILE}: not an output of this tool?")
        others = [name for name in storage.entries() if not lock_file_names(name)]
        if others:
            raise OutputRefused(
                f"{storage.uri} is not empty ({len(others)} entries, e.g. {others[0]!r}) and holds no {RUN_FILE}, so "
                "it is not an output of this tool; choose a new or empty folder for --output")
        return False
    try:
        previous = json.loads(storage.read_bytes(RUN_FILE)).get("config_hash")
    except ValueError:
        raise OutputRefused(f"{storage.uri}/{RUN_FILE} is unreadable; move the output aside") from None
    if previous != config_hash:
        raise OutputRefused(
            f"{storage.uri} was made with a different config (hash {previous}, this one is {config_hash}); "
            "use another output, or delete it to start over"
        )
    return True


def remove_temporaries(storage: Storage, *folders: str) -> int:
    """Delete files left under temporary names (by a killed writer) in ``folders`` (default: the run's)."""
    removed = 0
    for folder in folders or (SHARDS_DIR, SETS_DIR, THUMBS_DIR, MANIFEST_DIR, ""):
        for name in storage.list(folder) if folder else storage.list():
            if name.startswith(TEMPORARY_PREFIX):
                storage.fs.delete_file(storage.path(folder, name) if folder else storage.path(name))
                removed += 1
    return removed


def shards_beyond(storage: Storage, shard_count: int, prefix: str) -> list[int]:
    """Shard indices any of the output's shard folders holds at or past ``shard_count``."""
    found = set()
    for folder in SHARD_FOLDERS:
        for name in storage.list(folder):
            try:
                name_prefix, index, _ = parse_shard_name(name)
            except ValueError:
                continue
            if name_prefix == prefix and index >= shard_count:
                found.add(index)
    return sorted(found)


def refuse_shards_beyond(storage: Storage, seed_refs: pa.Table, prefix: str) -> None:
    """Refuses an output holding shards past the listing's last: they would stay, counted and verified, with
    seeds the input no longer has."""
    count = (max(seed_refs.column("shard_index").to_pylist()) + 1) if seed_refs.num_rows else 0
    stale = shards_beyond(storage, count, prefix)
    if stale:
        names = ", ".join(tar_name(prefix, i) for i in stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise OutputRefused(
            f"{storage.uri} holds {len(stale)} shard(s) beyond the {count} this listing makes ({names}): the input "
            f"shrank or --limit is smaller; delete those shards' files from {', '.join(f + '/' for f in SHARD_FOLDERS)}"
            " to keep the rest, or use another output")


def _listed_sources(seed_refs: pa.Table) -> dict[int, dict]:
    columns = {name: seed_refs.column(name).to_pylist() for name in ("seed_index", "shard_index", "source_uri",
                                                                       *SOURCE_FIELDS)}
    return {seed: {name: columns[name][i] for name in columns} for i, seed in enumerate(columns["seed_index"])}


def _changed(recorded: dict, listed: dict) -> str | None:
    """What differs between a seed as a manifest recorded it and as it is listed now (None: nothing known)."""
    for name in SOURCE_FIELDS:
        old, new = recorded.get(name), listed[name]
        if old is None or (new is None and name == "source_version"):
            continue  # not recorded (older manifest), or not knowable now
        if old != new:
            return f"{listed['source_uri']}{' member ' + str(listed['source_member']) if listed['source_member'] else ''}: {name} was {old}, now {new}"
    return None


def completed_shards(storage: Storage, seed_refs: pa.Table, prefix: str) -> set[int]:
    """Shard indices whose manifest exists and covers exactly the seeds now assigned to them. Refuses when such a
    shard's seeds were read from other bytes than the listing now names."""
    listed = _listed_sources(seed_refs)
    expected: dict[int, set] = {}
    for seed, entry in listed.items():
        expected.setdefault(entry["shard_index"], set()).add((seed, entry["source_uri"]))
    tars = set(storage.list(SHARDS_DIR)) & set(storage.list(SETS_DIR))
    done, changed = set(), {}
    for name in storage.list(MANIFEST_DIR):
        try:
            name_prefix, index, ext = parse_shard_name(name)
        except ValueError:
            continue
        if ext != "parquet" or name_prefix != prefix or index not in expected or tar_name(prefix, index) not in tars:
            continue
        rows = read_manifest(storage, name, ["seed_index", "source_uri", *SOURCE_FIELDS]).to_pylist()
        if {(r["seed_index"], r["source_uri"]) for r in rows} != expected[index]:
            continue
        done.add(index)
        found = next((what for r in rows if (what := _changed(r, listed[r["seed_index"]]))), None)
        if found:
            changed[name] = found
    if changed:
        names = sorted(changed)
        listed_names = " ".join(f"{MANIFEST_DIR}/{n}" for n in names[:3]) + (" ..." if len(names) > 3 else "")
        raise OutputRefused(
            f"{storage.uri}: the input changed since {len(names)} finished shard(s) were written "
            f"({changed[names[0]]}), so their samples come from other bytes; delete {listed_names} to redo those "
            "shards, or use another output")
    return done


def seen_in_completed(storage: Storage, shard_indices: set[int], prefix: str) -> tuple[dict[str, int], dict[str, int]]:
    """``(content id -> first seed index, seed id -> first seed index)`` over completed shards, for the run's
    dedupe registry: a copy in a later shard of an image in a completed one stays a copy on resume, and a
    repeated seed id stays a repeat. Seed ids count where the seed decoded and was no duplicate; content ids
    wherever they were recorded (a copy of an undecodable image is a copy too). A manifest older than schema 4
    records no content id: its seed ids stand in for them (a seed id is the content id unless the source gave one)."""
    contents: dict[str, int] = {}
    seed_ids: dict[str, int] = {}
    for index in sorted(shard_indices):
        name = f"{tar_name(prefix, index)[:-len('.tar')]}.parquet"
        for row in read_manifest(storage, name, ["seed_id", "seed_index", "seed_status", "reason",
                                                 "content_id"]).to_pylist():
            first_use = row["seed_status"] == STATUS_OK and not is_duplicate(row["reason"])
            if first_use:
                _lowest(seed_ids, row["seed_id"], row["seed_index"])
            content = row["content_id"] if row["content_id"] is not None else (row["seed_id"] if first_use else None)
            if content is not None:
                _lowest(contents, content, row["seed_index"])
    return contents, seed_ids


def _lowest(found: dict[str, int], key: str, index: int) -> None:
    found[key] = min(found.get(key, index), index)

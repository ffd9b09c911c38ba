"""Rebuilding a shard's tars for ``review apply``: from the run's own tars, kept under ``reviews/originals/``
the first time, with only the members that stay.

Crash-consistent: before the first tar is touched, ``reviews/apply-pending.json`` names every shard the apply
will rewrite, and it is removed only once every manifest is written. An apply that finds it (the last one was
killed between renaming a shard's tars and writing its manifest) rebuilds those shards whatever their
manifests say, so a withdrawn veto still brings its members back.

Originals are checked before use: the manifest records their sha256 (shard_files.ORIGINAL_*; before any
review, the run's tars' own). A copy that no longer matches, because a later run rewrote the shard (a larger
``--limit``, a changed input), is refreshed from the tar in place when that is the run's tar; otherwise
apply refuses in one line rather than rebuild from the wrong bytes.
"""

from __future__ import annotations

import hashlib
import json

from pipeline.output.shard_files import ORIGINAL_SHARD_SHA256, checksums, write_tar
from pipeline.output.state import OutputRefused
from pipeline.output.storage import Storage
from pipeline.output.verify import read_tar_samples
from schemas.keys import KeyFormatError, validate_key
from schemas.layout import REVIEW_ORIGINALS_DIR, REVIEWS_DIR, SETS_DIR, SHARDS_DIR
from schemas.sample import IMAGE_FILE, JSON_FILE, json_bytes

PENDING_FILE = "apply-pending.json"  # under reviews/: the shards a running apply rewrites


def pending(storage: Storage) -> set[str]:
    """The shards an apply that did not finish was rewriting (empty when the last apply finished)."""
    if not storage.exists(REVIEWS_DIR, PENDING_FILE):
        return set()
    try:
        shards = json.loads(storage.read_bytes(REVIEWS_DIR, PENDING_FILE))["shards"]
    except (ValueError, KeyError, TypeError):
        raise OutputRefused(f"{REVIEWS_DIR}/{PENDING_FILE} is unreadable: an earlier review apply did not finish; "
                            f"delete the file and run `counterfactory review apply` again") from None
    return {validate_key(s[: -len(".tar")], "shard") + ".tar" for s in shards if isinstance(s, str) and s.endswith(".tar")}


def mark_pending(storage: Storage, shards: set[str]) -> None:
    storage.write_atomic(json.dumps({"shards": sorted(shards)}, indent=1).encode(), REVIEWS_DIR, PENDING_FILE)


def clear_pending(storage: Storage) -> None:
    if storage.exists(REVIEWS_DIR, PENDING_FILE):
        storage.fs.delete_file(storage.path(REVIEWS_DIR, PENDING_FILE))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def original_tars(storage: Storage, tar_name: str, metadata: dict, reviewed_before: bool) -> dict[str, bytes]:
    """folder -> the run's own tar of this shard, kept under reviews/originals/ (copied there the first time,
    refreshed when a later run rewrote the shard), checked against the sha256 its manifest records."""
    if ORIGINAL_SHARD_SHA256 in metadata:  # recorded by an earlier apply
        expected = checksums(metadata, original=True)
    elif reviewed_before:  # an apply of a version that recorded none: the copies cannot be checked
        expected = ("", "")
    else:  # never applied (or a run rewrote the shard since): the run's tars are the ones in place
        expected = checksums(metadata)
    expected = dict(zip((SHARDS_DIR, SETS_DIR), expected))
    out = {}
    for folder in (SHARDS_DIR, SETS_DIR):
        kept = REVIEW_ORIGINALS_DIR, folder, tar_name
        data = storage.read_bytes(*kept) if storage.exists(*kept) else None
        want = expected[folder]
        if data is not None and (not want or _sha(data) == want):
            out[folder] = data
            continue
        in_place = storage.read_bytes(folder, tar_name)
        if (want and _sha(in_place) != want) or (not want and reviewed_before):
            state = "is missing" if data is None else "is not the tar the run wrote (its sha256 differs)"
            raise OutputRefused(f"{REVIEW_ORIGINALS_DIR}/{folder}/{tar_name} {state}, and {folder}/{tar_name} is not "
                                f"the run's either (an earlier review apply rewrote it); restore the run's tar into "
                                f"{REVIEW_ORIGINALS_DIR}/{folder}/, or run the pipeline again into a new output")
        storage.write_atomic(in_place, *kept)  # first apply, or the run rewrote the shard since: the tar in place
        out[folder] = in_place
    return out


def rebuild_tars(storage: Storage, tar_name: str, originals: dict[str, bytes],
                 kept: dict[str, set[str]]) -> tuple[str, str]:
    """The shard's two tars from its originals, holding only ``kept`` (set_id -> member sample keys, from the
    checked manifest: no other name from the tars is written); their sha256."""
    members = read_tar_samples(originals[SHARDS_DIR])
    sets = read_tar_samples(originals[SETS_DIR])
    set_files, position = [], {}
    for set_id, files in sets.items():
        if set_id not in kept:
            continue
        meta = json.loads(files[JSON_FILE])
        meta["members"] = [m for m in meta["members"] if m.get("key") in kept[set_id]]
        for index, m in enumerate(meta["members"]):
            position[m["key"]] = (index, len(meta["members"]))
        if meta["members"]:
            set_files += [(f"{set_id}.{IMAGE_FILE}", files[IMAGE_FILE]), (f"{set_id}.{JSON_FILE}", json_bytes(meta))]
    member_files = []
    for key, files in members.items():
        if key in position:
            meta = json.loads(files[JSON_FILE])
            meta["member_index"], meta["member_count"] = position[key]
            member_files += [(f"{key}.{IMAGE_FILE}", files[IMAGE_FILE]), (f"{key}.{JSON_FILE}", json_bytes(meta))]
    for name, _ in member_files + set_files:
        try:
            validate_key(name.partition(".")[0])
        except KeyFormatError as exc:  # cannot happen through a checked manifest; never write one
            raise OutputRefused(f"{REVIEW_ORIGINALS_DIR}/{tar_name}: {exc}") from None
    return write_tar(storage, SHARDS_DIR, tar_name, member_files), write_tar(storage, SETS_DIR, tar_name, set_files)

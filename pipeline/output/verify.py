"""``verify OUT``: every shard readable, both sample families of one shape and in step with each other, counts
agree with manifests and sizes.json, keys unique."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import defaultdict

from PIL import Image

from pipeline.output.manifest import read_raw
from pipeline.output.shard_writer import SET_SHA256, SHARD_SHA256
from pipeline.output.storage import Storage
from schemas.keys import KEY_PATTERN, parse_shard_name
from schemas.layout import MANIFEST_DIR, RUN_FILE, SETS_DIR, SHARDS_DIR, SIZES_FILE, manifest_name_of
from schemas.records import MANIFEST, REVIEW_COLUMNS, STATUS_ACCEPTED, VERDICT_REJECT, in_shards
from schemas.sample import IMAGE_FILE, JSON_FILE, SAMPLE_FILES, member_errors, set_errors


class SplitSample(ValueError):
    """A tar a WebDataset reader reads otherwise: one sample's files apart, or one file twice."""


def read_tar_samples(data: bytes, name: str = "tar") -> dict[str, dict[str, bytes]]:
    """``{key: {extension: bytes}}`` in tar order, split at the first dot as webdataset does. ``SplitSample``
    (naming ``name`` and the key) where webdataset would see other samples: it starts a new one at every change of
    key, so a key's files must be adjacent, and it refuses a file twice."""
    samples: dict[str, dict[str, bytes]] = {}
    last = None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")
            if key in samples and key != last:
                raise SplitSample(f"{name}: sample {key}'s files are not adjacent: {member.name} comes after "
                                  f"{last}'s files (webdataset reads them as two samples)")
            if extension in samples.get(key, ()):
                raise SplitSample(f"{name}: sample {key} holds {member.name} twice")
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
            last = key
    return samples


def verify_output(uri: str) -> tuple[list[str], dict]:
    """Problems found (empty when the output is sound) and a few counts."""
    storage = Storage(uri)
    problems: list[str] = []
    tars = [n for n in storage.list(SHARDS_DIR) if n.endswith(".tar")]
    set_tars = [n for n in storage.list(SETS_DIR) if n.endswith(".tar")]
    manifests = [n for n in storage.list(MANIFEST_DIR) if n.endswith(".parquet")]
    if not manifests:
        return [f"{uri}: no manifests under {MANIFEST_DIR}/"], {}
    try:
        sizes = json.loads(storage.read_bytes(SIZES_FILE))
    except Exception as exc:  # missing or corrupt
        return [f"{SIZES_FILE} unreadable: {exc}"], {}

    indices = {}
    for folder, names in ((SHARDS_DIR, tars), (SETS_DIR, set_tars), (MANIFEST_DIR, manifests)):
        for name in names:
            try:
                _, index, _ = parse_shard_name(name)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            indices.setdefault(folder, set()).add(index)
    tar_indices, manifest_indices = indices.get(SHARDS_DIR, set()), indices.get(MANIFEST_DIR, set())
    if tar_indices != manifest_indices:
        problems.append(f"shards without manifest or manifest without shard: {sorted(tar_indices ^ manifest_indices)}")
    if tar_indices != indices.get(SETS_DIR, set()):
        problems.append(f"{SHARDS_DIR}/ and {SETS_DIR}/ hold different shards: "
                        f"{sorted(tar_indices ^ indices.get(SETS_DIR, set()))}")
    if tar_indices and tar_indices != set(range(len(tar_indices))):
        problems.append(f"shard names are not contiguous from 000000: {sorted(tar_indices)}")
    problems.extend(_beyond_listing(storage, indices))
    if set(sizes) != set(tars):
        problems.append(f"sizes.json lists {sorted(set(sizes) ^ set(tars))} differently from shards/")

    seen_keys: dict[str, str] = {}
    counts = {"shards": len(tars), "samples": 0, "sets": 0, "manifest_rows": 0}
    for tar_name in tars:
        try:
            data = {SHARDS_DIR: storage.read_bytes(SHARDS_DIR, tar_name),
                    SETS_DIR: storage.read_bytes(SETS_DIR, tar_name) if tar_name in set_tars else b""}
            members = read_tar_samples(data[SHARDS_DIR], f"{SHARDS_DIR}/{tar_name}")
            sets = read_tar_samples(data[SETS_DIR], f"{SETS_DIR}/{tar_name}") if tar_name in set_tars else {}
        except SplitSample as exc:
            problems.append(str(exc))
            continue
        except (tarfile.TarError, OSError) as exc:
            problems.append(f"{tar_name}: unreadable tar ({exc})")
            continue
        counts["samples"] += len(members)
        counts["sets"] += len(sets)
        if sizes.get(tar_name) != len(members):
            problems.append(f"{tar_name}: {len(members)} samples, sizes.json says {sizes.get(tar_name)}")
        manifest_name = manifest_name_of(tar_name)
        try:
            table = read_raw(storage, manifest_name)  # as stored: verify reports what differs
        except Exception as exc:
            problems.append(f"{manifest_name}: unreadable manifest ({exc})")
            continue
        counts["manifest_rows"] += table.num_rows
        problems.extend(f"{folder}/{tar_name}: {p}" for folder, p in _check_checksums(data, table.schema))
        if table.schema.names != MANIFEST.names:
            missing = [c for c in MANIFEST.names if c not in table.schema.names]
            problems.append(f"{manifest_name}: columns differ from the manifest schema"
                            + (f" (no {', '.join(missing)}: written by an older version; `counterfactory review apply"
                               " OUT` adds the review columns)" if missing and set(missing) <= REVIEW_COLUMNS else ""))
            continue
        accepted = _accepted_in_manifest(table.to_pylist(), tar_name, manifest_name, problems)
        for key in [*members, *(f"{SETS_DIR}/{k}" for k in sets)]:
            if key in seen_keys:
                problems.append(f"{tar_name}: key {key} also in {seen_keys[key]}")
            seen_keys[key] = tar_name
        problems.extend(f"{tar_name}: {p}" for p in _check_samples(members, sets, accepted))
    for name in set(manifests) - {manifest_name_of(t) for t in tars}:
        counts["manifest_rows"] += read_raw(storage, name).num_rows
    return problems, counts


def _beyond_listing(storage: Storage, indices: dict[str, set[int]]) -> list[str]:
    """Shards past the last one the run that made the output listed (run.json ``listing``): left over from a
    larger input, with seeds the input no longer has."""
    try:
        listed = json.loads(storage.read_bytes(RUN_FILE)).get("listing") or {}
    except Exception:  # noqa: BLE001 - no run.json, or an unreadable one: nothing to compare with
        return []
    count = listed.get("shards") if isinstance(listed, dict) else None
    if not isinstance(count, int):
        return []  # an output made before run.json recorded its listing
    stale = sorted({i for found in indices.values() for i in found if i >= count})
    if not stale:
        return []
    return [f"shard(s) {stale[:10]} are beyond the {count} the run listed ({RUN_FILE}: listing): left from a larger "
            "input; delete them"]


def _check_checksums(data: dict[str, bytes], schema) -> list[tuple[str, str]]:
    metadata = schema.metadata or {}
    found = []
    for folder, key in ((SHARDS_DIR, SHARD_SHA256), (SETS_DIR, SET_SHA256)):
        if not data[folder]:
            continue  # a missing tar is reported already
        if key not in metadata:
            found.append((folder, "its manifest records no sha256"))
        elif hashlib.sha256(data[folder]).hexdigest() != metadata[key].decode():
            found.append((folder, "sha256 differs from the one its manifest recorded (changed after writing?)"))
    return found


def _accepted_in_manifest(rows: list[dict], tar_name: str, manifest_name: str, problems: list[str]) -> dict:
    """set_id -> member sample keys the manifest puts in this shard (accepted, not vetoed in review)."""
    accepted: dict[str, set[str]] = defaultdict(set)
    candidate_keys = set()
    for row in rows:
        ident = (row["seed_index"], row["set_id"], row["member_id"], row["candidate"])
        if ident in candidate_keys:
            problems.append(f"{manifest_name}: candidate {ident} listed twice")
        candidate_keys.add(ident)
        if row["status"] == STATUS_ACCEPTED and not in_shards(row) and row["review_verdict"] != VERDICT_REJECT:
            problems.append(f"{manifest_name}: accepted {row['set_id']}/{row['member_id']} is in no shard, "
                            "and no review vetoed it")
        if in_shards(row):
            if row["status"] != STATUS_ACCEPTED:
                problems.append(f"{manifest_name}: {row['status']} {row['set_id']}/{row['member_id']} names a shard")
            if row["shard"] != tar_name:
                problems.append(f"{manifest_name}: accepted {row['set_id']}/{row['member_id']} points at {row['shard']}")
            if row["file"] != f"{row['sample_key']}.{IMAGE_FILE}":
                problems.append(f"{manifest_name}: accepted {row['sample_key']} names the file {row['file']}")
            accepted[row["set_id"]].add(row["sample_key"])
    return accepted


def _check_samples(members: dict, sets: dict, accepted: dict[str, set[str]]) -> list[str]:
    """Both families against each other and the manifest: one shape, nothing missing, nothing extra."""
    problems = []
    member_meta = {}
    for key, files in members.items():
        if not KEY_PATTERN.match(key):
            problems.append(f"{SHARDS_DIR}: key {key!r} breaks the key format")
        meta, found = _sample_json(files, member_errors)
        problems.extend(f"{SHARDS_DIR}/{key}: {p}" for p in found)
        if meta is not None:
            member_meta[key] = meta
            if meta["key"] != key:
                problems.append(f"{SHARDS_DIR}/{key}: json key {meta['key']!r} differs from the key")
    listed: set[str] = set()
    for set_id, files in sets.items():
        if not KEY_PATTERN.match(set_id):
            problems.append(f"{SETS_DIR}: key {set_id!r} breaks the key format")
        meta, found = _sample_json(files, set_errors)
        problems.extend(f"{SETS_DIR}/{set_id}: {p}" for p in found)
        if meta is None:
            continue
        keys = [m["key"] for m in meta["members"]]
        listed.update(keys)
        if meta["set_id"] != set_id:
            problems.append(f"{SETS_DIR}/{set_id}: json set_id {meta['set_id']!r} differs from the key")
        if set(keys) != accepted.get(set_id, set()):
            problems.append(f"{SETS_DIR}/{set_id}: lists members {sorted(keys)}, the manifest accepts "
                            f"{sorted(accepted.get(set_id, set()))}")
        for index, key in enumerate(keys):
            member = member_meta.get(key)
            if key not in members:
                problems.append(f"{SETS_DIR}/{set_id}: member {key} is not in {SHARDS_DIR}/")
            elif member is not None and (member["set_id"], member["member_index"], member["member_count"]) != (
                    set_id, index, len(keys)):
                problems.append(f"{SHARDS_DIR}/{key}: says it is member {member['member_index']} of "
                                f"{member['member_count']} in {member['set_id']}; the set lists it {index} of {len(keys)}")
    for set_id in set(accepted) - set(sets):
        problems.append(f"accepted set {set_id} is missing from {SETS_DIR}/")
    problems.extend(f"{SHARDS_DIR}/{key}: no set in {SETS_DIR}/ lists it" for key in members if key not in listed)
    return problems


def _sample_json(files: dict[str, bytes], errors) -> tuple[dict | None, list[str]]:
    """The sample's parsed JSON when it is valid, and what is wrong with its files."""
    if set(files) != set(SAMPLE_FILES):
        return None, [f"files {sorted(files)}, every sample has {sorted(SAMPLE_FILES)}"]
    problems = []
    try:
        Image.open(io.BytesIO(files[IMAGE_FILE])).verify()
    except Exception as exc:
        problems.append(f"{IMAGE_FILE} does not decode ({exc})")
    try:
        meta = json.loads(files[JSON_FILE])
    except ValueError as exc:
        return None, problems + [f"json does not parse ({exc})"]
    found = [f"json: {e}" for e in errors(meta)]  # a list or a string fails the schema's object type
    return (None if found or problems else meta), problems + found

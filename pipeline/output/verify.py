"""``verify OUT``: every shard readable, counts agree with manifests and sizes.json, keys unique."""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict

import pyarrow.parquet as pq
from PIL import Image

from pipeline.output.storage import Storage
from schemas.keys import KEY_PATTERN, parse_shard_name
from schemas.layout import MANIFEST_DIR, SHARDS_DIR, SIZES_FILE, manifest_name_of
from schemas.records import MANIFEST, STATUS_ACCEPTED
from schemas.sample import JSON_FILE, SOURCE_FILE, sample_errors


def read_tar_samples(data: bytes) -> dict[str, dict[str, bytes]]:
    """``{key: {extension: bytes}}`` in tar order, split at the first dot as webdataset does."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def verify_output(uri: str) -> tuple[list[str], dict]:
    """Problems found (empty when the output is sound) and a few counts."""
    storage = Storage(uri)
    problems: list[str] = []
    tars = [n for n in storage.list(SHARDS_DIR) if n.endswith(".tar")]
    manifests = [n for n in storage.list(MANIFEST_DIR) if n.endswith(".parquet")]
    if not manifests:
        return [f"{uri}: no manifests under {MANIFEST_DIR}/"], {}
    try:
        sizes = json.loads(storage.read_bytes(SIZES_FILE))
    except Exception as exc:  # missing or corrupt
        return [f"{SIZES_FILE} unreadable: {exc}"], {}

    indices = {}
    for name in tars + manifests:
        try:
            prefix, index, ext = parse_shard_name(name)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        indices.setdefault(ext, set()).add(index)
    tar_indices, manifest_indices = indices.get("tar", set()), indices.get("parquet", set())
    if tar_indices != manifest_indices:
        problems.append(f"shards without manifest or manifest without shard: {sorted(tar_indices ^ manifest_indices)}")
    if tar_indices and tar_indices != set(range(len(tar_indices))):
        problems.append(f"shard names are not contiguous from 000000: {sorted(tar_indices)}")
    if set(sizes) != set(tars):
        problems.append(f"sizes.json lists {sorted(set(sizes) ^ set(tars))} differently from shards/")

    seen_keys: dict[str, str] = {}
    samples_total = 0
    manifest_rows = 0
    for tar_name in tars:
        try:
            samples = read_tar_samples(storage.read_bytes(SHARDS_DIR, tar_name))
        except (tarfile.TarError, OSError) as exc:
            problems.append(f"{tar_name}: unreadable tar ({exc})")
            continue
        samples_total += len(samples)
        if sizes.get(tar_name) != len(samples):
            problems.append(f"{tar_name}: {len(samples)} samples, sizes.json says {sizes.get(tar_name)}")
        manifest_name = manifest_name_of(tar_name)
        try:
            table = pq.read_table(storage.open_input(MANIFEST_DIR, manifest_name))
        except Exception as exc:
            problems.append(f"{manifest_name}: unreadable manifest ({exc})")
            continue
        manifest_rows += table.num_rows
        if table.schema.names != MANIFEST.names:
            problems.append(f"{manifest_name}: columns differ from the manifest schema")
            continue
        accepted = defaultdict(set)
        candidate_keys = set()
        for row in table.to_pylist():
            ident = (row["seed_index"], row["set_id"], row["member_id"], row["candidate"])
            if ident in candidate_keys:
                problems.append(f"{manifest_name}: candidate {ident} listed twice")
            candidate_keys.add(ident)
            if row["status"] == STATUS_ACCEPTED:
                if row["shard"] != tar_name:
                    problems.append(f"{manifest_name}: accepted {row['set_id']}/{row['member_id']} points at {row['shard']}")
                accepted[row["sample_key"]].add(row["file"])
        for key, files in samples.items():
            if not KEY_PATTERN.match(key):
                problems.append(f"{tar_name}: key {key!r} breaks the key format")
            if key in seen_keys:
                problems.append(f"{tar_name}: key {key} also in {seen_keys[key]}")
            seen_keys[key] = tar_name
            problems.extend(f"{tar_name}/{key}: {p}" for p in _check_sample(key, files, accepted.get(key)))
        for key in set(accepted) - set(samples):
            problems.append(f"{manifest_name}: accepted set {key} is missing from {tar_name}")
    for name in set(manifests) - {manifest_name_of(t) for t in tars}:
        manifest_rows += pq.read_metadata(storage.open_input(MANIFEST_DIR, name)).num_rows
    return problems, {"shards": len(tars), "samples": samples_total, "manifest_rows": manifest_rows}


def _check_sample(key: str, files: dict[str, bytes], accepted_files: set | None) -> list[str]:
    problems = []
    if JSON_FILE not in files or SOURCE_FILE not in files:
        return [f"sample lacks its {JSON_FILE} or {SOURCE_FILE}"]
    try:
        meta = json.loads(files[JSON_FILE])
    except ValueError as exc:
        return [f"json does not parse ({exc})"]
    problems.extend(f"json: {e}" for e in sample_errors(meta))
    if meta.get("set_id") != key:
        problems.append(f"json set_id {meta.get('set_id')!r} differs from the key")
    own = {JSON_FILE, SOURCE_FILE}
    expected = own | {m.get("file") for m in meta.get("members", [])}
    if set(files) != expected:
        problems.append(f"files {sorted(files)} differ from those the json lists {sorted(expected)}")
    if accepted_files is None:
        problems.append("no accepted manifest rows for this sample")
    elif accepted_files != expected - own:
        problems.append(f"manifest accepts {sorted(accepted_files)}, sample holds {sorted(expected - own)}")
    for name, data in files.items():
        if name.endswith(".jpg"):
            try:
                Image.open(io.BytesIO(data)).verify()
            except Exception as exc:
                problems.append(f"{name} does not decode ({exc})")
    return problems

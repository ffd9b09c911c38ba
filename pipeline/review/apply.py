"""``review apply``: the reviewers' verdicts decide which members stay in the shards.

1. Gather the verdicts (``OUT/reviews/`` and any files given) and refuse any that name an unknown set or member.
2. Decide each member: per reviewer, reject when they rejected it or its set; across reviewers, by the policy
   (``any-reject``: one reject vetoes; ``majority``: more rejects than accepts vetoes, a tie keeps).
3. Apply the filter's own set rule: a set with fewer members left than ``filter.min_members`` (0: all of
   them) is vetoed whole, as the filter would have rejected it.
4. Rebuild the tars of every shard whose members changed from the tars the run wrote (kept under
   ``reviews/originals/`` the first time), so a withdrawn veto brings its member back and applying twice
   writes the same bytes; record the verdicts in the manifests (``review_*`` columns, beside the automatic
   status); then sizes.json, stats.json and the report.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from pipeline.output.run_record import json_bytes as run_json_bytes
from pipeline.output.shard_writer import MANIFEST_COMPRESSION, SET_SHA256, SHARD_SHA256, manifest_table, write_tar
from pipeline.output.state import OutputLock, OutputRefused, remove_temporaries
from pipeline.output.stats import collect
from pipeline.output.storage import Storage
from pipeline.output.verify import read_tar_samples
from pipeline.report.build import write_report
from pipeline.review.agreement import agreement, set_decisions
from pipeline.review.verdicts import (check_known, imported_name, keep_imported, latest, output_verdicts,
                                      read_verdict_file)
from schemas.layout import (MANIFEST_DIR, REVIEW_APPLIED_FILE, REVIEW_ORIGINALS_DIR, REVIEWS_DIR, RUN_FILE, SETS_DIR,
                            SHARDS_DIR, SIZES_FILE, STATS_FILE, manifest_name_of)
from schemas.records import STATUS_ACCEPTED, VERDICT_ACCEPT, VERDICT_REJECT
from schemas.sample import IMAGE_FILE, JSON_FILE, json_bytes, member_key

POLICIES = ("any-reject", "majority")


@dataclass
class ApplyResult:
    verdicts: int
    reviewers: list[str]
    shards_rewritten: list[str] = field(default_factory=list)
    manifests_rewritten: list[str] = field(default_factory=list)
    sets_vetoed: int = 0
    members_vetoed: int = 0


def member_votes(standing: dict[tuple, dict], members_of: dict[str, list[str]]) -> dict[tuple, dict[str, tuple]]:
    """(set_id, member_id) -> reviewer -> (verdict, reason): a set verdict counts for each of its members,
    and a reject, of the set or the member, outweighs the same reviewer's accept."""
    votes: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    for (reviewer, set_id, member_id), row in sorted(standing.items(), key=lambda kv: kv[0][2] is not None):
        for member in members_of[set_id] if member_id is None else [member_id]:
            earlier = votes[(set_id, member)].get(reviewer)
            if earlier is None or earlier[0] != VERDICT_REJECT or row["verdict"] == VERDICT_REJECT:
                votes[(set_id, member)][reviewer] = (row["verdict"], row["reason"])
    return votes


def decide(votes: dict[str, tuple], policy: str) -> str:
    rejects = sum(v == VERDICT_REJECT for v, _ in votes.values())
    if policy == "any-reject":
        return VERDICT_REJECT if rejects else VERDICT_ACCEPT
    return VERDICT_REJECT if rejects > len(votes) - rejects else VERDICT_ACCEPT


def review_columns(votes: dict[tuple, dict[str, tuple]], kept_members: dict[str, list[str]],
                   members_of: dict[str, list[str]], accepted: dict[str, list[str]], min_members: int,
                   policy: str) -> dict[tuple, dict]:
    """(set_id, member_id) -> the manifest's review columns, the set rule applied to accepted sets;
    fills ``kept_members``: set_id -> the accepted members that stay, for every accepted set."""
    out = {}
    for key, given in votes.items():
        verdict = decide(given, policy)
        reasons = [f"{r}: {reason or 'no reason given'}" for r, (v, reason) in sorted(given.items()) if v == VERDICT_REJECT]
        votes_text = "; ".join(f"{r} {v}" + (f" ({reason})" if reason else "") for r, (v, reason) in sorted(given.items()))
        out[key] = {"review_verdict": verdict, "review_reason": "; ".join(reasons) if verdict == VERDICT_REJECT else None,
                    "reviewers": ",".join(sorted(given)), "review_votes": votes_text}
    for set_id, members in accepted.items():
        kept = [m for m in members if out.get((set_id, m), {}).get("review_verdict") != VERDICT_REJECT]
        needed = min(min_members or len(members_of[set_id]), len(members_of[set_id]))  # the filter's rule
        if len(kept) < needed:
            note = (f"set vetoed: {len(kept)} of {len(members_of[set_id])} members left after review, "
                    f"the filter needs {needed}")
            for member in kept:
                entry = out.setdefault((set_id, member), {"review_reason": None, "reviewers": None,
                                                          "review_votes": None})
                entry.update(review_verdict=VERDICT_REJECT,
                             review_reason="; ".join(filter(None, [entry["review_reason"], note])))
            kept = []
        kept_members[set_id] = kept
    return out


def _rebuild_tars(storage: Storage, tar_name: str, kept_keys: set[str], reviewed_before: bool) -> tuple[str, str]:
    """The shard's two tars, from the run's originals, holding only the kept members; their sha256."""
    for folder in (SHARDS_DIR, SETS_DIR):
        if not storage.exists(REVIEW_ORIGINALS_DIR, folder, tar_name):
            if reviewed_before:  # the tar in place is not the run's any more: it cannot stand in for it
                raise OutputRefused(f"{REVIEW_ORIGINALS_DIR}/{folder}/{tar_name} is missing, but an earlier review "
                                    f"apply removed members from {folder}/{tar_name}; restore reviews/originals/")
            storage.write_atomic(storage.read_bytes(folder, tar_name), REVIEW_ORIGINALS_DIR, folder, tar_name)
    members = read_tar_samples(storage.read_bytes(REVIEW_ORIGINALS_DIR, SHARDS_DIR, tar_name))
    sets = read_tar_samples(storage.read_bytes(REVIEW_ORIGINALS_DIR, SETS_DIR, tar_name))
    set_files, position = [], {}
    for set_id, files in sets.items():
        meta = json.loads(files[JSON_FILE])
        meta["members"] = [m for m in meta["members"] if m["key"] in kept_keys]
        for index, m in enumerate(meta["members"]):
            position[m["key"]] = (index, len(meta["members"]))
        if meta["members"]:
            set_files += [(f"{set_id}.{IMAGE_FILE}", files[IMAGE_FILE]), (f"{set_id}.{JSON_FILE}", json_bytes(meta))]
    member_files = []
    for key, files in members.items():
        if key in kept_keys:
            meta = json.loads(files[JSON_FILE])
            meta["member_index"], meta["member_count"] = position[key]
            member_files += [(f"{key}.{IMAGE_FILE}", files[IMAGE_FILE]), (f"{key}.{JSON_FILE}", json_bytes(meta))]
    return write_tar(storage, SHARDS_DIR, tar_name, member_files), write_tar(storage, SETS_DIR, tar_name, set_files)


def apply_review(uri: str, files: list[str] = (), policy: str = "any-reject") -> ApplyResult:
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: allowed {', '.join(POLICIES)}")
    storage = Storage(uri)
    run = json.loads(storage.read_bytes(RUN_FILE)) if storage.exists(RUN_FILE) else {}
    if run.get("status") != "complete":
        raise OutputRefused(f"{uri}: the run is not complete (run.json status {run.get('status')!r}); "
                            "finish or resume it before applying reviews")
    lock = OutputLock(storage)
    lock.acquire()
    try:
        return _apply(storage, run, files, policy)
    finally:
        lock.release()


def _apply(storage: Storage, run: dict, files: list[str], policy: str) -> ApplyResult:
    # 0. what an apply killed midway left (the files it renames into place are whole or absent)
    remove_temporaries(storage, SHARDS_DIR, SETS_DIR, MANIFEST_DIR, "", REVIEWS_DIR,
                       *(f"{REVIEW_ORIGINALS_DIR}/{f}" for f in (SHARDS_DIR, SETS_DIR)))
    # 1. every manifest, every verdict
    manifests = {name: pq.read_table(storage.open_input(MANIFEST_DIR, name))
                 for name in storage.list(MANIFEST_DIR) if name.endswith(".parquet")}
    members_of: dict[str, list[str]] = defaultdict(list)
    accepted: dict[str, list[str]] = defaultdict(list)  # accepted set -> its accepted members
    for table in manifests.values():
        for row in table.select(["set_id", "member_id", "set_status", "status"]).to_pylist():
            if row["member_id"] not in members_of[row["set_id"]]:
                members_of[row["set_id"]].append(row["member_id"])
            if row["set_status"] == STATUS_ACCEPTED and row["status"] == STATUS_ACCEPTED:
                accepted[row["set_id"]].append(row["member_id"])
    given = {path: read_verdict_file(path) for path in files}
    verdicts = output_verdicts(storage, skip_imported={imported_name(p) for p in files})
    verdicts += [row for rows in given.values() for row in rows]
    check_known(verdicts, members_of)
    for path, rows in given.items():
        keep_imported(storage, path, rows)
    standing = latest(verdicts)
    # 2-3. decisions per member, the set rule
    min_members = run.get("config", {}).get("filter", {}).get("min_members", 0)
    kept_members: dict[str, list[str]] = {}
    columns = review_columns(member_votes(standing, members_of), kept_members, members_of, accepted,
                             min_members, policy)
    result = ApplyResult(verdicts=len(verdicts), reviewers=sorted({r["reviewer"] for r in verdicts}))
    # 4. shards whose members changed, then every manifest whose columns changed
    for name, table in sorted(manifests.items()):
        tar_name = name[: -len(".parquet")] + ".tar"
        rows = table.to_pylist()
        for row in rows:
            row.update(columns.get((row["set_id"], row["member_id"]),
                                   {"review_verdict": None, "review_reason": None, "reviewers": None,
                                    "review_votes": None}))
            kept = row["status"] == STATUS_ACCEPTED and row["member_id"] in kept_members.get(row["set_id"], ())
            key = member_key(row["set_id"], row["member_id"]) if kept else None
            row.update(shard=tar_name if kept else None, sample_key=key, file=f"{key}.{IMAGE_FILE}" if kept else None)
        metadata = table.schema.metadata or {}
        before = {row["sample_key"] for row in table.select(["sample_key"]).to_pylist() if row["sample_key"]}
        after = {row["sample_key"] for row in rows if row["sample_key"]}
        shard_sha, set_sha = (metadata.get(k, b"").decode() for k in (SHARD_SHA256, SET_SHA256))
        if before != after:
            reviewed_before = any(r["status"] == STATUS_ACCEPTED and r["set_status"] == STATUS_ACCEPTED and not r["shard"]
                                  for r in table.select(["status", "set_status", "shard"]).to_pylist())
            shard_sha, set_sha = _rebuild_tars(storage, tar_name, after, reviewed_before)
            result.shards_rewritten.append(tar_name)
        new = manifest_table(rows, shard_sha, set_sha)
        if not (new.equals(table) and new.schema.metadata == table.schema.metadata and new.schema == table.schema):
            with storage.open_atomic(MANIFEST_DIR, name) as stream:
                pq.write_table(new, stream, compression=MANIFEST_COMPRESSION)
            result.manifests_rewritten.append(manifest_name_of(tar_name))
    result.sets_vetoed = sum(not kept_members[s] for s in accepted)
    result.members_vetoed = sum(len(accepted[s]) - len(kept_members[s]) for s in accepted)
    # 5. what the output says about itself
    found = agreement(set_decisions(standing))
    applied = {"policy": policy, "reviewers": result.reviewers, "verdicts": len(verdicts),
               "sources": sorted({r["source"] for r in verdicts}),
               "agreement": {k: found[k] for k in ("method", "kappa", "shared_sets", "observed")},
               "disagreements": len(found["disagreements"])}
    storage.write_atomic(run_json_bytes(applied), REVIEW_APPLIED_FILE)
    stats, sizes = collect(storage)
    old = json.loads(storage.read_bytes(STATS_FILE)) if storage.exists(STATS_FILE) else {}
    storage.write_atomic(run_json_bytes(sizes), SIZES_FILE)
    storage.write_atomic(run_json_bytes({**old, **stats}), STATS_FILE)
    report = run.get("config", {}).get("report", {})
    write_report(storage, report.get("max_sets", 500), pictures=report.get("enabled", True))
    return result

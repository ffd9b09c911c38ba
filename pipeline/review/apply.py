"""``review apply``: the reviewers' verdicts decide which members stay in the shards.

1. Gather the verdicts (``OUT/reviews/`` and any files given) and refuse any that name an unknown set or member.
2. Decide each member: per reviewer, reject when they rejected it or its set; across reviewers, by the policy
   (``any-reject``: one reject vetoes; ``majority``: more rejects than accepts vetoes, a tie keeps).
3. Apply the filter's own set rule: a set with fewer members left than ``filter.min_members`` (0: all of
   them) is vetoed whole, as the filter would have rejected it.
4. Rebuild the tars of every shard whose members changed from the tars the run wrote (kept under
   ``reviews/originals/`` the first time, checked by sha256: pipeline/review/rebuild.py), so a withdrawn veto
   brings its member back and applying twice writes the same bytes; record the verdicts in the manifests
   (``review_*`` columns, beside the automatic status; the shard columns and checksums from
   pipeline/output/shard_files.py, as the shard writer's); then sizes.json, stats.json and the report.
   The shards being rewritten are marked first (reviews/apply-pending.json), so an apply killed midway is
   finished by the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field

from pipeline.output.manifest import manifest_name_of_tar, read_manifests, stored_columns
from pipeline.output.run_record import json_bytes as run_json_bytes
from pipeline.output.shard_files import (ORIGINAL_SHARD_SHA256, checksums, manifest_table, shard_columns,
                                         write_manifest)
from pipeline.output.state import OutputLock, OutputRefused, remove_temporaries
from pipeline.output.stats import collect
from pipeline.output.storage import Storage
from pipeline.report.build import write_report
from pipeline.review.agreement import agreement, set_decisions
from pipeline.review.rebuild import clear_pending, mark_pending, original_tars, pending, rebuild_tars
from pipeline.review.verdicts import (check_known, imported_name, keep_imported, latest, output_verdicts,
                                      read_verdict_file)
from schemas.layout import (MANIFEST_DIR, REVIEW_APPLIED_FILE, REVIEW_ORIGINALS_DIR, REVIEWS_DIR, RUN_FILE, SETS_DIR,
                            SHARDS_DIR, SIZES_FILE, STATS_FILE)
from schemas.records import STATUS_ACCEPTED, VERDICT_ACCEPT, VERDICT_REJECT
from stages.utils import faults

POLICIES = ("any-reject", "majority")
NO_REVIEW = {"review_verdict": None, "review_reason": None, "reviewers": None, "review_votes": None}


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


def apply_review(uri: str, files: list[str] = (), policy: str = "any-reject") -> ApplyResult:
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: allowed {', '.join(POLICIES)}")
    storage = Storage(uri)
    run = json.loads(storage.read_bytes(RUN_FILE)) if storage.exists(RUN_FILE) else {}
    if run.get("status") != "complete":
        raise OutputRefused(f"{uri}: the run is not complete (run.json status {run.get('status')!r}); "
                            "finish or resume it before applying reviews")
    if os.environ.get(faults.ENV):
        faults.install(os.environ[faults.ENV])
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
    unfinished = pending(storage)  # shards a killed apply was rewriting: rebuilt whatever their manifests say
    # 1. every manifest (any declared version, keys checked), every verdict
    manifests = dict(read_manifests(storage))
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
    # 4. the shards whose members changed (or a killed apply was rewriting), marked before any tar is touched
    def standing_rows(name: str) -> list[dict]:
        rows = manifests[name].to_pylist()
        for row in rows:
            row.update(columns.get((row["set_id"], row["member_id"]), NO_REVIEW))
            kept = row["status"] == STATUS_ACCEPTED and row["member_id"] in kept_members.get(row["set_id"], ())
            row.update(shard_columns(row["set_id"], row["member_id"], manifest_name_of_tar(name) if kept else None))
        return rows

    rebuild = set()
    for name, table in manifests.items():
        before = {key for key in table.column("sample_key").to_pylist() if key}
        if before != {row["sample_key"] for row in standing_rows(name) if row["sample_key"]} \
                or manifest_name_of_tar(name) in unfinished:
            rebuild.add(name)
    if rebuild:
        mark_pending(storage, unfinished | {manifest_name_of_tar(n) for n in rebuild})
    # 5. rebuild those tars, then every manifest whose columns or checksums changed
    for name in manifests:
        rows = standing_rows(name)
        table, tar_name = manifests[name], manifest_name_of_tar(name)
        metadata = table.schema.metadata or {}
        shard_sha, set_sha = checksums(metadata)
        originals = checksums(metadata, original=True) if ORIGINAL_SHARD_SHA256 in metadata else None
        if name in rebuild:
            reviewed_before = any(r["status"] == STATUS_ACCEPTED and r["set_status"] == STATUS_ACCEPTED and not r["shard"]
                                  for r in table.select(["status", "set_status", "shard"]).to_pylist())
            run_tars = original_tars(storage, tar_name, metadata, reviewed_before)
            originals = tuple(hashlib.sha256(run_tars[f]).hexdigest() for f in (SHARDS_DIR, SETS_DIR))
            kept: dict[str, set[str]] = defaultdict(set)
            for row in rows:
                if row["sample_key"]:
                    kept[row["set_id"]].add(row["sample_key"])
            shard_sha, set_sha = rebuild_tars(storage, tar_name, run_tars, kept)
            result.shards_rewritten.append(tar_name)
            faults.check_crash("review_apply")  # tests: die here, the tars renamed and the manifest not yet written
        new = manifest_table(rows, shard_sha, set_sha, originals)
        if not (new.equals(table) and new.schema.metadata == table.schema.metadata
                and stored_columns(storage, name) == new.schema.names):  # an older version's file: rewritten whole
            write_manifest(storage, name, new)
            result.manifests_rewritten.append(name)
    clear_pending(storage)
    result.sets_vetoed = sum(not kept_members[s] for s in accepted)
    result.members_vetoed = sum(len(accepted[s]) - len(kept_members[s]) for s in accepted)
    # 6. what the output says about itself
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

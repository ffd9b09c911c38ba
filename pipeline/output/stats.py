"""Run statistics and shard sizes, computed from the manifests on storage (so a resumed run counts
the shards an earlier run wrote exactly as it counts its own)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from schemas import SCHEMA_VERSION
from pipeline.output.manifest import manifest_name_of_tar, read_manifest, read_manifests
from pipeline.output.parity import PARITY_COLUMNS, ParityCounter, flagged
from pipeline.output.shard_files import shard_size
from pipeline.output.storage import Storage
from schemas.layout import REVIEW_APPLIED_FILE, manifest_name
from schemas.records import STATUS_ACCEPTED, STATUS_ERROR, STATUS_OK, VERDICT_REJECT, in_shards
from stages.ingest.reading import is_duplicate

COLUMNS = list(dict.fromkeys(["seed_index", "seed_status", "set_id", "set_status", "axis", "concept", "status",
                               "sample_key", "reason", "caption_note", "shard", "review_verdict", "reviewers",
                               *PARITY_COLUMNS]))


def collect(storage: Storage) -> tuple[dict, dict]:
    """``(stats, sizes)``: counts by status, concept and axis, parity by attribute value (pipeline/output/parity.py);
    shard name -> accepted samples."""
    seeds: dict[int, str] = {}
    sets: dict[tuple, str] = {}
    by_concept_axis: dict[str, Counter] = defaultdict(Counter)
    candidates = Counter()
    error_kinds = Counter()
    caption_notes = Counter()  # sets whose caption the checks changed, or whose phrasing fell back
    sizes: dict[str, int] = {}
    parity = ParityCounter()
    review = {"sets_reviewed": set(), "sets_vetoed": set(), "members_vetoed": 0, "reviewers": set(), "in_shards": set()}
    for name, table in read_manifests(storage, COLUMNS):  # older versions read as declared (output/manifest.py)
        rows = table.to_pylist()
        for row in rows:
            seeds.setdefault(row["seed_index"], row["seed_status"])
            key = (row["seed_index"], row["set_id"])
            if key not in sets:
                sets[key] = row["set_status"]
                by_concept_axis[f"{row['concept']}/{row['axis']}"][row["set_status"]] += 1
                for note in (row["caption_note"] or "").split("; "):
                    if note:  # the kind: "first sentence kept", "fallback phrasing", "cut to 40 words", ...
                        caption_notes[note.split(":")[0]] += 1
            candidates[row["status"]] += 1
            parity.add(row)
            if row["status"] == STATUS_ERROR and row["reason"]:
                error_kinds[row["reason"].split(":")[0]] += 1
            if in_shards(row):
                review["in_shards"].add(key)
            if row["review_verdict"] is not None:
                review["sets_reviewed"].add(key)
                review["reviewers"].update(filter(None, (row["reviewers"] or "").split(",")))
                if row["status"] == STATUS_ACCEPTED and row["review_verdict"] == VERDICT_REJECT:
                    review["members_vetoed"] += 1
                    review["sets_vetoed"].add(key)
        sizes[manifest_name_of_tar(name)] = shard_size(rows)
    seed_counts = Counter(seeds.values())
    stats = {
        "schema_version": SCHEMA_VERSION,
        "seeds": {"total": len(seeds), "ok": seed_counts.get(STATUS_OK, 0), "error": seed_counts.get(STATUS_ERROR, 0)},
        "sets": dict(sorted(Counter(sets.values()).items())),
        "candidates": dict(sorted(candidates.items())),
        "samples": sum(sizes.values()),
        "shards": len(sizes),
        "sets_by_concept_axis": {k: dict(sorted(v.items())) for k, v in sorted(by_concept_axis.items())},
        "candidate_error_kinds": dict(sorted(error_kinds.items())),
        "caption_notes": dict(sorted(caption_notes.items())),
        "sets_in_shards": len(review["in_shards"]),
        "parity": (by_value := parity.result()),
        "parity_flagged": flagged(by_value),
        "review": _review_stats(storage, review),
    }
    return stats, dict(sorted(sizes.items()))


def _review_stats(storage: Storage, found: dict) -> dict:
    """What human review changed (from the manifests' review columns) and how (reviews/applied.json)."""
    applied = json.loads(storage.read_bytes(REVIEW_APPLIED_FILE)) if storage.exists(REVIEW_APPLIED_FILE) else {}
    return {
        "applied": bool(applied),
        "policy": applied.get("policy"),
        "reviewers": sorted(found["reviewers"]),
        "sets_reviewed": len(found["sets_reviewed"]),
        "sets_vetoed": len(found["sets_vetoed"] - found["in_shards"]),  # whole sets gone from the shards
        "members_vetoed": found["members_vetoed"],
        "agreement": applied.get("agreement"),
    }


def seen_seed_ids(storage: Storage, shard_indices: set[int], prefix: str) -> dict[str, int]:
    """seed_id -> first seed_index among completed shards, so duplicates stay duplicates on resume."""
    seen: dict[str, int] = {}
    for index in sorted(shard_indices):
        table = read_manifest(storage, manifest_name(prefix, index), ["seed_id", "seed_index", "seed_status", "reason"])
        for row in table.to_pylist():
            if row["seed_status"] == STATUS_OK and not is_duplicate(row["reason"]):
                seen.setdefault(row["seed_id"], row["seed_index"])
    return seen

"""Shard writer: WebDataset tars of accepted sets plus a parquet manifest of every member candidate.

It runs on the driver and only assembles: the encode stage (stages/encode.py) has already made every
file's bytes. One call writes one shard (schemas/sample.py has the two sample shapes):
``shards/{prefix}-NNNNNN.tar`` holds a sample per accepted member (``{key}.jpg``, ``{key}.json``),
``sets/{prefix}-NNNNNN.tar`` a sample per accepted set of the same seeds (``{set_id}.jpg``, ``{set_id}.json``),
and ``manifest/{prefix}-NNNNNN.parquet`` a row per member candidate, accepted, rejected or errored.
Tars are byte-for-byte reproducible (fixed mtimes, owners and order); the tars are renamed into place
first and the manifest last, so a shard counts as done only when its manifest exists. The columns and
checksums the files derive from each other come from pipeline/output/shard_files.py, as review apply's do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.output.shard_files import SET_SHA256, SHARD_SHA256  # noqa: F401 (verify and croissant import them here)
from pipeline.output.shard_files import manifest_table, shard_columns, write_manifest, write_tar
from pipeline.output.storage import Storage
from schemas import SCHEMA_VERSION
from schemas.layout import MANIFEST_DIR, SETS_DIR, SHARDS_DIR, THUMBS_DIR, manifest_name, tar_name
from schemas.records import SCORE_NAMES, STATUS_ACCEPTED, STATUS_ERROR, member_attributes, rows_to_table
from schemas.sample import IMAGE_FILE, JSON_FILE, THUMB_SOURCE_ID, member_key
from stages.encode import ShardConfig, sample_members

THUMBS = pa.schema(
    [
        pa.field("set_id", pa.string(), nullable=False),
        pa.field("seed_index", pa.int64(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),  # THUMB_SOURCE_ID for the seed itself
        pa.field("candidate", pa.int32()),
        pa.field("jpeg", pa.binary(), nullable=False),
    ]
)


@dataclass
class ShardResult:
    index: int
    tar_name: str
    manifest_name: str
    samples: int
    manifest_rows: int


class ShardWriter:
    """Writes shards; ``provenance`` says which models and settings made them (recorded per sample)."""

    def __init__(self, config: ShardConfig, storage: Storage, provenance: dict):
        self.config = config
        self.storage = storage
        self.provenance = provenance

    def setup(self) -> None:
        self.storage.makedirs(SHARDS_DIR)
        self.storage.makedirs(SETS_DIR)
        self.storage.makedirs(MANIFEST_DIR)
        if self.config.thumbnail_size:
            self.storage.makedirs(THUMBS_DIR)

    def names(self, index: int) -> tuple[str, str]:
        return tar_name(self.config.prefix, index), manifest_name(self.config.prefix, index)

    def manifest_rows(self, row: dict, shard: str | None) -> list[dict]:
        prov = self.provenance
        base = {
            "schema_version": SCHEMA_VERSION, "set_id": row["set_id"], "seed_id": row["seed_id"],
            "seed_index": row["seed_index"], "source_uri": row["source_uri"], "source_member": row.get("source_member"),
            **{k: row.get(k) for k in ("source_offset", "source_size", "source_version", "content_id")},
            "axis": row["axis"], "concept": row.get("concept"), "concept_source": row.get("concept_source"),
            "set_status": row.get("set_status") or STATUS_ERROR, "seed_status": row["status"],
            "caption": row.get("caption"), "caption_note": row.get("caption_note"),
            "captioner": prov["models"]["captioner"], "editor": prov["models"]["editor"],
            "clip_model": prov["models"]["clip"], "judge_model": prov["models"].get("judge"),
            "config_hash": prov["config_hash"],
        }
        members = {m["member_id"]: m for m in row["members"]}
        candidates = row.get("candidates")
        if candidates is None:  # the seed never reached the editor: every planned candidate errored
            candidates = [
                {"member_id": m["member_id"], "candidate": c, "noise_seed": seed, "status": STATUS_ERROR,
                 "reason": row.get("set_reason") or row.get("error") or "not processed"}
                for c, seed in enumerate(row["candidate_seeds"]) for m in row["members"]
            ]
        out = []
        for cand in candidates:
            member = members[cand["member_id"]]
            accepted = cand.get("status") == STATUS_ACCEPTED
            out.append(
                {
                    **base,
                    "member_id": cand["member_id"], "attributes": json.dumps(member_attributes(member), sort_keys=True),
                    "candidate": cand["candidate"], "noise_seed": cand["noise_seed"],
                    "guidance_scale": cand.get("guidance_scale"), "p2p_fraction": cand.get("p2p_fraction"),
                    "status": cand.get("status") or STATUS_ERROR, "reason": cand.get("reason"),
                    "target_caption": member["target_caption"], "instruction": member["instruction"],
                    **{k: cand.get(k) for k in SCORE_NAMES},
                    "judge_answers": cand.get("judge_answers"),
                    "score_notes": cand.get("score_notes"), "identity_member": bool(member.get("identity")),
                    **shard_columns(row["set_id"], cand["member_id"], shard if accepted else None),
                }
            )
        return out

    @staticmethod
    def thumbnails(rows: list[dict]) -> list[dict]:
        """The encode stage's thumbnails of every seed and candidate, for reports."""
        out = []
        for row in rows:
            base = {"set_id": row["set_id"], "seed_index": row["seed_index"]}
            if row.get("src_thumb") is not None:
                out.append({**base, "member_id": THUMB_SOURCE_ID, "candidate": None, "jpeg": row["src_thumb"]})
            for cand in row.get("candidates") or []:
                if cand.get("thumb") is not None:
                    out.append({**base, "member_id": cand["member_id"], "candidate": cand["candidate"],
                                "jpeg": cand["thumb"]})
        return out

    def write_shard(self, index: int, rows: list[dict]) -> ShardResult:
        tar_name, manifest_name = self.names(index)
        rows = sorted(rows, key=lambda r: (r["seed_index"], r["set_id"]))
        accepted = [row for row in rows if row.get("set_status") == STATUS_ACCEPTED]
        for row in accepted:
            if row.get("src_jpeg") is None or row.get("set_json") is None:
                raise ValueError(f"set {row['set_id']} is accepted but was not encoded: pass the rows through "
                                 "the encode stage (stages.encode.SampleEncoder) before the shard writer")
        member_files = []
        for row in accepted:
            chosen = {c["member_id"]: c for c in row["candidates"] if c["status"] == STATUS_ACCEPTED}
            for member in sample_members(row):
                cand = chosen[member["member_id"]]
                key = member_key(row["set_id"], member["member_id"])
                member_files += [(f"{key}.{IMAGE_FILE}", cand["jpeg"]), (f"{key}.{JSON_FILE}", cand["member_json"])]
        shard_sha = write_tar(self.storage, SHARDS_DIR, tar_name, member_files)
        set_sha = write_tar(self.storage, SETS_DIR, tar_name, (
            file for row in accepted for file in ((f"{row['set_id']}.{IMAGE_FILE}", row["src_jpeg"]),
                                                  (f"{row['set_id']}.{JSON_FILE}", row["set_json"]))))
        manifest = [m for row in rows
                    for m in self.manifest_rows(row, tar_name if row.get("set_status") == STATUS_ACCEPTED else None)]
        if self.config.thumbnail_size:
            with self.storage.open_atomic(THUMBS_DIR, manifest_name) as stream:
                pq.write_table(rows_to_table(self.thumbnails(rows), THUMBS), stream, compression="none")
        write_manifest(self.storage, manifest_name, manifest_table(manifest, shard_sha, set_sha))
        return ShardResult(index, tar_name, manifest_name, len(member_files) // 2, len(manifest))

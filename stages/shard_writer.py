"""Shard writer: WebDataset tars of accepted sets plus a parquet manifest of every member candidate.

One call writes one shard: ``shards/{prefix}-NNNNNN.tar`` holds a sample per accepted set
(``{set_id}.src.jpg``, ``{set_id}.{member_id}.jpg`` ..., ``{set_id}.json``), and
``manifest/{prefix}-NNNNNN.parquet`` holds a row per member candidate, accepted, rejected or errored.
Every JPEG carries its provenance (stages/provenance.py): generated member images say they are
synthetic, with models, seeds and ids; with ``provenance.watermark`` they also carry an invisible
watermark. Tars are byte-for-byte reproducible (fixed mtimes, owners and order); the tar is renamed into place
first and the manifest last, so a shard counts as done only when its manifest exists.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from schemas import SCHEMA_VERSION, keys
from schemas.records import MANIFEST, STATUS_ACCEPTED, STATUS_ERROR, rows_to_table
from stages.imaging import encode_jpeg, from_raw
from stages.provenance import WATERMARK_METHOD, ProvenanceConfig, apply_watermark, encode_with_provenance
from stages.storage import Storage

SHARDS_DIR = "shards"
MANIFEST_DIR = "manifest"
THUMBS_DIR = "thumbs"
SCORE_NAMES = ("text_image", "directional", "image_image", "attribute_margin", "nsfw")
GENERATOR = f"counterfactory (sample schema {SCHEMA_VERSION})"

THUMBS = pa.schema(
    [
        pa.field("set_id", pa.string(), nullable=False),
        pa.field("seed_index", pa.int64(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),  # "src" for the seed itself
        pa.field("candidate", pa.int32()),
        pa.field("jpeg", pa.binary(), nullable=False),
    ]
)


@dataclass
class ShardConfig:
    prefix: str = "cf"
    seeds_per_shard: int = 100  # every shard covers a fixed range of seeds: resumable, contiguous names
    jpeg_quality: int = 95
    thumbnail_size: int = 96  # thumbs/ keeps a small JPEG of every candidate, rejected ones too; 0 = none
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        try:
            keys.validate_key(self.prefix, "prefix")
        except keys.KeyError_ as exc:
            found.append(("prefix", str(exc)))
        if self.seeds_per_shard < 1:
            found.append(("seeds_per_shard", "must be >= 1"))
        if self.thumbnail_size < 0:
            found.append(("thumbnail_size", "must be >= 0 (0 turns thumbnails off)"))
        if not 1 <= self.jpeg_quality <= 100:
            found.append(("jpeg_quality", "must be between 1 and 100"))
        return found


@dataclass
class ShardResult:
    index: int
    tar_name: str
    manifest_name: str
    samples: int
    manifest_rows: int


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _attributes(member: dict) -> dict:
    return {a["attribute"]: a["value"] for a in member["attributes"]}


class ShardWriter:
    """Writes shards; ``provenance`` says which models and settings made them (recorded per sample)."""

    def __init__(self, config: ShardConfig, storage: Storage, provenance: dict):
        self.config = config
        self.storage = storage
        self.provenance = provenance

    def setup(self) -> None:
        self.storage.makedirs(SHARDS_DIR)
        self.storage.makedirs(MANIFEST_DIR)
        if self.config.thumbnail_size:
            self.storage.makedirs(THUMBS_DIR)

    def names(self, index: int) -> tuple[str, str]:
        return keys.shard_name(self.config.prefix, index, "tar"), keys.shard_name(self.config.prefix, index, "parquet")

    def sample_json(self, row: dict, chosen: dict[str, dict]) -> dict:
        prov = self.provenance
        members = []
        for member in row["members"]:
            cand = chosen[member["member_id"]]
            members.append(
                {
                    "member_id": member["member_id"],
                    "attributes": _attributes(member),
                    "phrase": member["phrase"],
                    "target_caption": member["target_caption"],
                    "instruction": member["instruction"],
                    "conversations": member.get("conversations") or [],
                    "candidate": cand["candidate"],
                    "noise_seed": cand["noise_seed"],
                    "guidance_scale": cand.get("guidance_scale"),
                    "p2p_fraction": cand.get("p2p_fraction"),
                    "file": f"{member['member_id']}.jpg",
                    "scores": {k: cand.get(k) for k in SCORE_NAMES},
                }
            )
        return {
            "schema_version": SCHEMA_VERSION,
            "synthetic": True,
            "set_id": row["set_id"],
            "seed_id": row["seed_id"],
            "axis": row["axis"],
            "axis_attributes": [a["attribute"] for a in row["members"][0]["attributes"]],
            "concept": row["concept"],
            "concept_group": prov["concept_groups"].get(row["concept"]),
            "concept_source": row["concept_source"],
            "source": {"uri": row["source_uri"], "member": row.get("source_member"), "caption": row["caption"], "file": "src.jpg",
                       "generated": row.get("candidate_bases") is not None},
            "members": members,
            "models": prov["models"],
            "model_revisions": prov.get("revisions", {}),
            "generation": prov["generation"],
            "run": {"seed": prov["run_seed"], "config_hash": prov["config_hash"]},
            "provenance": {
                "generator": GENERATOR,
                "image_metadata": self.config.provenance.metadata,
                "watermark": self.watermark_label(),
            },
        }

    def watermark_label(self) -> dict | None:
        config = self.config.provenance
        return {"method": WATERMARK_METHOD, "text": config.watermark_text} if config.watermark else None

    def member_record(self, row: dict, member: dict, cand: dict) -> dict:
        """What a generated image's own metadata says about it."""
        prov = self.provenance
        return {
            "synthetic": True, "generator": GENERATOR, "set_id": row["set_id"], "seed_id": row["seed_id"],
            "member_id": member["member_id"], "attributes": _attributes(member), "concept": row["concept"],
            "candidate": cand["candidate"], "noise_seed": cand["noise_seed"],
            "target_caption": member["target_caption"], "models": prov["models"],
            "model_revisions": prov.get("revisions", {}), "generation": prov["generation"],
            "run_seed": prov["run_seed"], "config_hash": prov["config_hash"], "watermark": self.watermark_label(),
        }

    def encode_synthetic(self, image: Image.Image, record: dict, description: str) -> bytes:
        """A generated image (a member, or generate mode's base): marked synthetic, watermarked when on."""
        config = self.config.provenance
        if config.watermark:
            image = apply_watermark(image, config.watermark_text)
        return encode_with_provenance(image, self.config.jpeg_quality, record if config.metadata else None,
                                      description, synthetic=True, software=GENERATOR, full_chroma=config.watermark)

    def encode_member(self, row: dict, member: dict, cand: dict) -> bytes:
        values = ", ".join(_attributes(member).values())
        description = (f"Synthetic image generated by counterfactory ({self.provenance['models']['editor']}): "
                       f"{values} counterfactual of seed {row['seed_id']}, set {row['set_id']}, member {member['member_id']}")
        image = from_raw(cand["image_rgb"], cand["width"], cand["height"])
        return self.encode_synthetic(image, self.member_record(row, member, cand), description)

    def encode_source(self, row: dict) -> bytes:
        """The seed photo as ingested, or in generate mode the generated base image the members share."""
        image = from_raw(row["image_rgb"], row["width"], row["height"])
        record = {"role": "seed", "set_id": row["set_id"], "seed_id": row["seed_id"],
                  "source_uri": row["source_uri"], "source_member": row.get("source_member")}
        if row.get("candidate_bases") is not None:
            record.update(synthetic=True, role="base", generator=GENERATOR, base_prompt=row["caption"],
                          models=self.provenance["models"], config_hash=self.provenance["config_hash"],
                          watermark=self.watermark_label())
            description = (f"Synthetic base image generated by counterfactory ({self.provenance['models']['editor']}) "
                           f"for counterfactual set {row['set_id']}: {row['caption']}")
            return self.encode_synthetic(image, record, description)
        description = f"Seed image of counterfactual set {row['set_id']}, as ingested (not generated by counterfactory)"
        return encode_with_provenance(image, self.config.jpeg_quality,
                                      dict(record, synthetic=False) if self.config.provenance.metadata else None,
                                      description, synthetic=False, software=GENERATOR)

    def manifest_rows(self, row: dict, shard: str | None) -> list[dict]:
        prov = self.provenance
        base = {
            "schema_version": SCHEMA_VERSION, "set_id": row["set_id"], "seed_id": row["seed_id"],
            "seed_index": row["seed_index"], "source_uri": row["source_uri"], "source_member": row.get("source_member"),
            "axis": row["axis"], "concept": row.get("concept"), "concept_source": row.get("concept_source"),
            "set_status": row.get("set_status") or STATUS_ERROR, "seed_status": row["status"],
            "caption": row.get("caption"),
            "captioner": prov["models"]["captioner"], "editor": prov["models"]["editor"],
            "clip_model": prov["models"]["clip"], "config_hash": prov["config_hash"],
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
                    "member_id": cand["member_id"], "attributes": json.dumps(_attributes(member), sort_keys=True),
                    "candidate": cand["candidate"], "noise_seed": cand["noise_seed"],
                    "guidance_scale": cand.get("guidance_scale"), "p2p_fraction": cand.get("p2p_fraction"),
                    "status": cand.get("status") or STATUS_ERROR, "reason": cand.get("reason"),
                    "target_caption": member["target_caption"], "instruction": member["instruction"],
                    **{k: cand.get(k) for k in SCORE_NAMES},
                    "shard": shard if accepted else None,
                    "sample_key": row["set_id"] if accepted else None,
                    "file": f"{cand['member_id']}.jpg" if accepted else None,
                }
            )
        return out

    def thumbnails(self, rows: list[dict]) -> list[dict]:
        """Small JPEGs of every seed and candidate, for reports: rejected ones have no other copy."""
        size, out = self.config.thumbnail_size, []

        def thumb(raw, width, height) -> bytes:
            # An integer box reduction first: the resampling filter then has few pixels left to read
            # (measured 3x cheaper than thumbnail() alone at 256 -> 96 px; the writer runs on the driver).
            image = from_raw(raw, width, height)
            factor = max(image.size) // size
            if factor > 1:
                image = image.reduce(factor)
            if max(image.size) > size:
                image.thumbnail((size, size), Image.Resampling.BOX)
            return encode_jpeg(image, 85)

        for row in rows:
            if row.get("image_rgb") is None:
                continue
            base = {"set_id": row["set_id"], "seed_index": row["seed_index"]}
            out.append({**base, "member_id": "src", "candidate": None,
                        "jpeg": thumb(row["image_rgb"], row["width"], row["height"])})
            for cand in row.get("candidates") or []:
                if cand.get("image_rgb") is not None:
                    out.append({**base, "member_id": cand["member_id"], "candidate": cand["candidate"],
                                "jpeg": thumb(cand["image_rgb"], cand["width"], cand["height"])})
        return out

    def write_shard(self, index: int, rows: list[dict]) -> ShardResult:
        tar_name, manifest_name = self.names(index)
        rows = sorted(rows, key=lambda r: (r["seed_index"], r["set_id"]))
        tar_bytes = io.BytesIO()
        manifest: list[dict] = []
        samples = 0
        with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for row in rows:
                in_tar = row.get("set_status") == STATUS_ACCEPTED
                manifest.extend(self.manifest_rows(row, tar_name if in_tar else None))
                if not in_tar:
                    continue
                chosen = {c["member_id"]: c for c in row["candidates"] if c["status"] == STATUS_ACCEPTED}
                _add_file(tar, f"{row['set_id']}.src.jpg", self.encode_source(row))
                for member in row["members"]:
                    jpeg = self.encode_member(row, member, chosen[member["member_id"]])
                    _add_file(tar, f"{row['set_id']}.{member['member_id']}.jpg", jpeg)
                sample = json.dumps(self.sample_json(row, chosen), sort_keys=True, indent=1).encode("utf-8")
                _add_file(tar, f"{row['set_id']}.json", sample)
                samples += 1
        self.storage.write_atomic(tar_bytes.getvalue(), SHARDS_DIR, tar_name)
        if self.config.thumbnail_size:
            thumbs = pa.BufferOutputStream()
            pq.write_table(rows_to_table(self.thumbnails(rows), THUMBS), thumbs, compression="none")
            self.storage.write_atomic(thumbs.getvalue().to_pybytes(), THUMBS_DIR, manifest_name)
        buffer = pa.BufferOutputStream()
        pq.write_table(rows_to_table(manifest, MANIFEST), buffer, compression="zstd")
        self.storage.write_atomic(buffer.getvalue().to_pybytes(), MANIFEST_DIR, manifest_name)
        return ShardResult(index, tar_name, manifest_name, samples, len(manifest))

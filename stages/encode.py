"""Sample encoding: a judged set's raw images become the files of its sample.

JPEG encoding with provenance metadata (and the watermark), the sample JSON and the thumbnails are
the CPU-heavy part of writing a shard. This stage does them in a CPU actor pool after the filter, so
they stay off the GPU actors and off the driver, which only assembles tars and manifests, one shard
after another. The rows it returns carry JPEGs instead of raw RGB (about a tenth of the bytes to move
to the driver).

Per set row it fills ``src_jpeg`` and ``set_json`` (the set sample) and each chosen candidate's ``jpeg``
and ``member_json`` (its member sample) when the set is accepted, and ``src_thumb`` / each candidate's ``thumb`` for every image (rejected candidates have no
other copy); then it drops the raw images.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, field

from PIL import Image

from schemas import SCHEMA_VERSION, keys
from schemas.records import SCORE_NAMES, SET, STATUS_ACCEPTED, member_attributes
from schemas.sample import GENERATOR, attribute_list, json_bytes, member_key
from stages.base import Resources, SetStage
from stages.utils.imaging import encode_jpeg, from_raw
from stages.utils.provenance import WATERMARK_METHOD, ProvenanceConfig, apply_watermark, encode_with_provenance

THUMBNAIL_QUALITY = 85


def sample_members(row: dict) -> list[dict]:
    """An accepted set's members that have an accepted candidate, in set order: the members its samples hold
    (all of them unless ``filter.min_members`` let the set pass with fewer)."""
    chosen = {c["member_id"] for c in row.get("candidates") or [] if c["status"] == STATUS_ACCEPTED}
    return [m for m in row["members"] or [] if m["member_id"] in chosen]


@dataclass
class ShardConfig:
    """The ``shards`` section: what the shards hold and how their files are encoded."""

    prefix: str = "cf"
    seeds_per_shard: int = 100  # every shard covers a fixed range of seeds: resumable, contiguous names
    jpeg_quality: int = 95
    thumbnail_size: int = 96  # thumbs/ keeps a small JPEG of every candidate, rejected ones too; 0 = none
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        try:
            keys.validate_key(self.prefix, "prefix")
        except keys.KeyFormatError as exc:
            found.append(("prefix", str(exc)))
        if self.seeds_per_shard < 1:
            found.append(("seeds_per_shard", "must be >= 1"))
        if self.thumbnail_size < 0:
            found.append(("thumbnail_size", "must be >= 0 (0 turns thumbnails off)"))
        if not 1 <= self.jpeg_quality <= 100:
            found.append(("jpeg_quality", "must be between 1 and 100"))
        return found


@dataclass
class EncodeConfig:
    """The ``encode`` section: the encode stage's actor pool (CPU only; the shard writer is the driver)."""

    resources: Resources = field(default_factory=Resources)


def thumbnail(image: Image.Image, size: int) -> bytes:
    # An integer box reduction first: the resampling filter then has few pixels left to read
    # (measured 3x cheaper than thumbnail() alone at 256 -> 96 px).
    factor = max(image.size) // size
    if factor > 1:
        image = image.reduce(factor)
    if max(image.size) > size:
        image.thumbnail((size, size), Image.Resampling.BOX)
    return encode_jpeg(image, THUMBNAIL_QUALITY)


class SampleEncoder(SetStage):
    """``provenance`` says which models and settings made the images (recorded in every file)."""

    name = "encode"
    output_schema = SET

    def __init__(self, config: ShardConfig, provenance: dict):
        super().__init__()
        self.config = config
        self.provenance = provenance

    def watermark_label(self) -> dict | None:
        config = self.config.provenance
        return {"method": WATERMARK_METHOD, "text": config.watermark_text} if config.watermark else None

    def member_json(self, row: dict, member: dict, index: int, cand: dict) -> dict:
        """A member sample's JSON: every key in every sample (the member schema), whatever the axis."""
        return {
            "schema_version": SCHEMA_VERSION,
            "synthetic": True,
            "key": member_key(row["set_id"], member["member_id"]),
            "set_id": row["set_id"],
            "seed_id": row["seed_id"],
            "member_id": member["member_id"],
            "member_index": index,
            "member_count": len(sample_members(row)),
            "axis": row["axis"],
            "axis_attributes": [a["attribute"] for a in member["attributes"]],
            "attributes": attribute_list(member_attributes(member)),
            "concept": row["concept"],
            "concept_group": self.provenance["concept_groups"][row["concept"]],
            "phrase": member["phrase"],
            "target_caption": member["target_caption"],
            "instruction": member["instruction"],
            "identity_member": bool(member.get("identity")),
            "conversations": member.get("conversations") or [],
            "candidate": cand["candidate"],
            "noise_seed": cand["noise_seed"],
            "guidance_scale": cand.get("guidance_scale"),
            "p2p_fraction": cand.get("p2p_fraction"),
            "scores": {k: cand.get(k) for k in SCORE_NAMES},
            # a string in every sample ("" when every check applied): a reader that infers a column's type from
            # the first shard would otherwise take it for null and fail on the first note
            "score_notes": cand.get("score_notes") or "",
            "judge_answers": json.loads(cand["judge_answers"]) if cand.get("judge_answers") else [],
        }

    def set_json(self, row: dict) -> dict:
        """A set sample's JSON: what its members share, said once, and their keys in set order."""
        prov = self.provenance
        return {
            "schema_version": SCHEMA_VERSION,
            "set_id": row["set_id"],
            "seed_id": row["seed_id"],
            "axis": row["axis"],
            "axis_attributes": [a["attribute"] for a in row["members"][0]["attributes"]],
            "concept": row["concept"],
            "concept_group": prov["concept_groups"][row["concept"]],
            "concept_source": row["concept_source"],
            "source": {"uri": row["source_uri"], "member": row.get("source_member"), "caption": row["caption"],
                       "generated": row.get("candidate_bases") is not None},
            "members": [{"member_id": m["member_id"], "key": member_key(row["set_id"], m["member_id"]),
                         "attributes": attribute_list(member_attributes(m))} for m in sample_members(row)],
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

    def member_record(self, row: dict, member: dict, cand: dict) -> dict:
        """What a generated image's own metadata says about it."""
        prov = self.provenance
        return {
            "synthetic": True, "generator": GENERATOR, "set_id": row["set_id"], "seed_id": row["seed_id"],
            "member_id": member["member_id"], "attributes": member_attributes(member), "concept": row["concept"],
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

    def encode_member(self, row: dict, member: dict, cand: dict, image: Image.Image) -> bytes:
        values = ", ".join(member_attributes(member).values())
        description = (f"Synthetic image generated by counterfactory ({self.provenance['models']['editor']}): "
                       f"{values} counterfactual of seed {row['seed_id']}, set {row['set_id']}, member {member['member_id']}")
        return self.encode_synthetic(image, self.member_record(row, member, cand), description)

    def encode_source(self, row: dict, image: Image.Image) -> bytes:
        """The seed photo as ingested, or in generate mode the generated base image the members share."""
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

    def encode_row(self, row: dict) -> None:
        """Fill the row's encoded files in place and drop its raw images."""
        size = self.config.thumbnail_size
        accepted = row.get("set_status") == STATUS_ACCEPTED
        if row.get("image_rgb") is not None:
            source = from_raw(row["image_rgb"], row["width"], row["height"])
            if accepted:
                row["src_jpeg"] = self.encode_source(row, source)
            if size:
                row["src_thumb"] = thumbnail(source, size)
        members = {m["member_id"]: (i, m) for i, m in enumerate(sample_members(row))}
        for cand in row.get("candidates") or []:
            if cand.get("image_rgb") is None:
                continue
            image = from_raw(cand["image_rgb"], cand["width"], cand["height"])
            if accepted and cand["status"] == STATUS_ACCEPTED and cand["member_id"] in members:
                index, member = members[cand["member_id"]]
                cand["jpeg"] = self.encode_member(row, member, cand, image)
                cand["member_json"] = json_bytes(self.member_json(row, member, index, cand))
            if size:
                cand["thumb"] = thumbnail(image, size)
        if accepted:
            row["set_json"] = json_bytes(self.set_json(row))
        drop_raw_images(row)

    def process_row(self, row: dict) -> None:
        self.encode_row(row)
        self.counters["jpegs"] += sum(1 for c in row.get("candidates") or [] if c.get("jpeg") is not None)
        self.counters["jpegs"] += row.get("src_jpeg") is not None

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        for name in ("src_jpeg", "set_json"):
            row[name] = None
        for cand in row.get("candidates") or []:
            cand["jpeg"] = cand["member_json"] = None
        drop_raw_images(row)
        return super().on_error(row, exc)


def drop_raw_images(row: dict) -> None:
    row["image_rgb"] = None
    row["candidate_bases"] = None
    for cand in row.get("candidates") or []:
        cand["image_rgb"] = None

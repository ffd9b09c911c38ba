"""Arrow schemas of the rows that cross each stage boundary, and of the manifest.

Stages take and return ``pyarrow.Table`` batches that conform to these schemas; images travel as raw
RGB bytes (``image_rgb`` with ``width``/``height``) so no stage pays for an encode it does not need,
until ``encode`` turns them into the shard's JPEGs and thumbnails.
From ``plan`` onward one row is one counterfactual set: its seed, its axis, its members and, after
``edit``, every member candidate.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

STATUS_OK = "ok"  # a seed row that decoded (seed level: ok | error)
STATUS_ERROR = "error"
STATUS_ACCEPTED = "accepted"  # a candidate or set the filter kept (set level: accepted | rejected | error)
STATUS_REJECTED = "rejected"

# The filter's CLIP scores of a candidate, each with a threshold (filter.thresholds), then the safety score.
CLIP_SCORES = ("text_image", "directional", "image_image", "attribute_margin")
# The VLM judge's (filter.judge): P(yes) of closed questions, each with a threshold (filter.judge.thresholds)
JUDGE_SCORES = ("judge_attribute", "judge_concept", "judge_scene")
# Model-free drift (filter.drift): the person's skin colour (CIELAB L* and hue angle) in seed and member, its
# change, and the change outside the person (mean absolute pixel difference, structural similarity)
DRIFT_SCORES = ("skin_l_seed", "skin_l", "skin_hue_seed", "skin_hue", "delta_l", "delta_hue", "outside_mad",
                "outside_ssim")
SCORE_NAMES = CLIP_SCORES + ("nsfw",) + JUDGE_SCORES + DRIFT_SCORES
ClipScoreName = Literal[CLIP_SCORES]  # a config field naming one of them (filter.rank_by)

# Listing of inputs, made on the driver: cheap, no image bytes yet.
SEED_REF = pa.schema(
    [
        pa.field("seed_index", pa.int64(), nullable=False),  # position in the sorted input listing
        pa.field("shard_index", pa.int64(), nullable=False),  # the output shard this seed's sets go to
        pa.field("source_uri", pa.string(), nullable=False),  # file path / URI, or the tar for webdataset
        pa.field("source_member", pa.string()),  # the file inside a tar; null otherwise
        pa.field("source_offset", pa.int64()),  # where that file's bytes start in the tar
        pa.field("source_size", pa.int64()),
        # the listed file's version when the run listed it (stages/ingest/versions.py): ETag, generation or Hub
        # blob id of an object, mtime and size of a local file (the tar's, for a tar member); null: unknown
        pa.field("source_version", pa.string()),
        pa.field("source_path", pa.binary()),  # exact local path bytes when the name is not UTF-8
        pa.field("source_error", pa.string()),  # a problem found while listing (decode reports it)
        pa.field("source_seed_id", pa.string()),  # seed id given by the source (parquet), if any
        pa.field("concept", pa.string()),  # concept given by the source's metadata, if any
        pa.field("concept_source", pa.string()),  # source | zero_shot | caption | default
        pa.field("caption", pa.string()),  # caption given by the source, if any
        # what the caption checks or the planner changed or fell back on, and why (null: nothing)
        pa.field("caption_note", pa.string()),
    ]
)

_SEED_IMAGE_FIELDS = [
    pa.field("seed_id", pa.string(), nullable=False),
    pa.field("content_id", pa.string()),  # hash of the seed's bytes (dedupe), when they were read
    pa.field("image_rgb", pa.binary()),  # raw RGB bytes, height * width * 3
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("status", pa.string(), nullable=False),  # ok | error
    pa.field("error", pa.string()),  # why, when status == error
]

# After ingest (decode + normalise).
SEED = pa.schema(list(SEED_REF) + _SEED_IMAGE_FIELDS)

MEMBER = pa.struct(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("attributes", pa.list_(pa.struct([("attribute", pa.string()), ("value", pa.string())]))),
        pa.field("phrase", pa.string()),  # "an Asian woman": zero-shot checks and instructions
        pa.field("target_caption", pa.string()),
        pa.field("instruction", pa.string()),
        # The value(s) the seed already shows: the target caption is the caption itself. The member is still
        # edited (no set holds one real photo among edits), but no text change means no edit direction.
        pa.field("identity", pa.bool_()),
        # LLaVA-format turns about the set's concept, never naming the attribute (taxonomy.conversations)
        pa.field("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
    ]
)

CANDIDATE = pa.struct(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("candidate", pa.int32(), nullable=False),
        pa.field("noise_seed", pa.int64(), nullable=False),
        pa.field("image_rgb", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("error", pa.string()),  # the editor failed on this candidate
        pa.field("guidance_scale", pa.float32()),  # as used: fixed, or drawn per candidate
        pa.field("p2p_fraction", pa.float32()),  # text_to_image: share of steps under attention control
        # Filled by the filter:
        pa.field("text_image", pa.float32()),
        pa.field("directional", pa.float32()),
        pa.field("image_image", pa.float32()),
        pa.field("attribute_margin", pa.float32()),
        pa.field("nsfw", pa.float32()),  # P(unsafe) from the safety check; null when it is off
        *(pa.field(name, pa.float32()) for name in JUDGE_SCORES + DRIFT_SCORES),  # null: off, not asked, abstained
        pa.field("judge_answers", pa.string()),  # JSON: each question asked, P(yes), yes + no mass
        pa.field("failed_checks", pa.list_(pa.string())),
        # checks that did not apply to this candidate, and why ("directional: identity member: no text change")
        pa.field("score_notes", pa.string()),
        pa.field("status", pa.string()),  # accepted | rejected | error
        pa.field("reason", pa.string()),
        # Filled by encode (which then drops image_rgb): the member sample's JPEG and JSON if chosen, a thumbnail
        pa.field("jpeg", pa.binary()),
        pa.field("member_json", pa.binary()),
        pa.field("thumb", pa.binary()),
    ]
)

# After plan: one row per (seed, axis).
SET = pa.schema(
    list(SEED_REF)
    + _SEED_IMAGE_FIELDS
    + [
        pa.field("set_id", pa.string(), nullable=False),
        pa.field("axis", pa.string(), nullable=False),
        pa.field("members", pa.list_(MEMBER)),
        pa.field("candidate_seeds", pa.list_(pa.int64())),
        # Generate mode: each candidate's base image (raw RGB at width x height), by candidate index
        pa.field("candidate_bases", pa.list_(pa.binary())),
        # Filled by edit and filter:
        pa.field("candidates", pa.list_(CANDIDATE)),
        pa.field("set_status", pa.string()),  # accepted | rejected | error
        pa.field("set_reason", pa.string()),
        # Filled by encode: the set sample's source JPEG and JSON (accepted sets), the seed's thumbnail
        pa.field("src_jpeg", pa.binary()),
        pa.field("set_json", pa.binary()),
        pa.field("src_thumb", pa.binary()),
    ]
)

# One manifest row per member candidate: accepted, rejected and errored alike.
MANIFEST = pa.schema(
    [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("set_id", pa.string(), nullable=False),
        pa.field("seed_id", pa.string(), nullable=False),
        pa.field("seed_index", pa.int64(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_member", pa.string()),
        # Since schema 4: where the seed's bytes were and which version of the file (resume checks them), and
        # the hash of the bytes (dedupe across a resume); null when not known (or before schema 4)
        pa.field("source_offset", pa.int64()),  # a tar member's bytes start here in the tar
        pa.field("source_size", pa.int64()),  # and are this long
        pa.field("source_version", pa.string()),  # see SEED_REF
        pa.field("content_id", pa.string()),  # the seed's content id (null: input.dedupe off or never read)
        pa.field("axis", pa.string(), nullable=False),
        pa.field("concept", pa.string()),
        pa.field("concept_source", pa.string()),
        pa.field("member_id", pa.string()),
        pa.field("attributes", pa.string()),  # JSON object attribute -> value
        pa.field("candidate", pa.int32()),
        pa.field("noise_seed", pa.int64()),
        pa.field("guidance_scale", pa.float32()),
        pa.field("p2p_fraction", pa.float32()),
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected | error
        pa.field("reason", pa.string()),
        pa.field("set_status", pa.string(), nullable=False),
        pa.field("seed_status", pa.string(), nullable=False),  # ok | error (the seed never decoded)
        pa.field("caption", pa.string()),
        pa.field("caption_note", pa.string()),  # caption checks and phrasing fallbacks, with the reason
        pa.field("target_caption", pa.string()),
        pa.field("instruction", pa.string()),
        pa.field("text_image", pa.float32()),
        pa.field("directional", pa.float32()),
        pa.field("image_image", pa.float32()),
        pa.field("attribute_margin", pa.float32()),
        pa.field("nsfw", pa.float32()),  # safety check score, P(unsafe); null when the check is off
        *(pa.field(name, pa.float32()) for name in JUDGE_SCORES + DRIFT_SCORES),
        pa.field("judge_answers", pa.string()),  # JSON list: {check, question, p_yes (null: abstained), mass}
        pa.field("score_notes", pa.string()),  # checks that did not apply, and why (a null score has one)
        pa.field("identity_member", pa.bool_()),  # the member shows the seed's own value (see MEMBER.identity)
        pa.field("shard", pa.string()),  # tar holding the member sample (shards/, and its set in sets/); null unless accepted
        pa.field("sample_key", pa.string()),  # the member sample's webdataset key ({set_id}-{member_id}) when in a tar
        pa.field("file", pa.string()),  # the member image's name inside the tar, when in a tar
        # Human review (``counterfactory review apply``), beside the automatic status, which stays as the filter set it:
        pa.field("review_verdict", pa.string()),  # accept | reject after the review policy; null: nobody reviewed it
        pa.field("review_reason", pa.string()),  # "reviewer: reason" of each reject, "; "-joined
        pa.field("reviewers", pa.string()),  # the reviewers who judged this member, comma-joined, sorted
        pa.field("review_votes", pa.string()),  # each reviewer's verdict: "ann reject (blurry); bob accept"
        pa.field("captioner", pa.string()),
        pa.field("editor", pa.string()),
        pa.field("clip_model", pa.string()),
        pa.field("judge_model", pa.string()),  # filter.judge's VLM; null when the judge is off
        pa.field("config_hash", pa.string(), nullable=False),
    ]
)


REVIEW_COLUMNS = {"review_verdict", "review_reason", "reviewers", "review_votes"}  # the manifest's, set by review apply
SOURCE_COLUMNS = {"source_offset", "source_size", "source_version", "content_id"}  # added in schema 4
VERDICT_ACCEPT = "accept"  # a reviewer's verdict on a set or a member
VERDICT_REJECT = "reject"


def in_shards(row: dict) -> bool:
    """Whether a manifest row's member sample is in the shards: accepted by the filter and not vetoed in review
    (``shard`` names its tar exactly then)."""
    return row["shard"] is not None


def member_attributes(member: dict) -> dict[str, str]:
    """A MEMBER's attributes as ``{attribute: value}``."""
    return {a["attribute"]: a["value"] for a in member["attributes"]}


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a batch from row dicts, filling absent columns with nulls; extra keys are an error."""
    if rows:
        unknown = set().union(*(row.keys() for row in rows)) - set(schema.names)
        if unknown:
            raise ValueError(f"columns not in the schema: {sorted(unknown)}")
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


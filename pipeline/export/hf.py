"""A Hugging Face dataset folder: ``datasets.load_dataset(DEST)`` gives one row per member with ``image`` as
an ``Image`` feature, and the README's YAML front matter (license, task categories, tags, size category,
configs) lets the folder go to the Hub as it is (``huggingface-cli upload``).

Parquet, because the Hub serves it as is and its schema metadata carries the feature types: the ``image``
column is the ``{bytes, path}`` struct that ``datasets`` stores images in, declared an ``Image`` there.
Attribute values come twice on purpose: ``attributes`` (the list every sample has) and one string column per
attribute (null where the member's axis does not vary it), which is what ``ds.filter`` wants.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.export.members import ExportMember
from schemas.records import SCORE_NAMES

DATA_DIR = "data"
ROWS_PER_FILE = 2000
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PAIRS = pa.list_(pa.struct([("attribute", pa.string()), ("value", pa.string())]))
TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M")]
TEXT = ("key", "set_id", "seed_id", "member_id", "concept", "concept_group", "axis", "phrase", "target_caption",
        "instruction")


def attribute_column(attribute: str) -> str:
    """The flat column of an attribute; prefixed where its name is taken by another column."""
    taken = set(TEXT) | set(SCORE_NAMES) | {"image", "attributes", "conversations", "weight", "member_index",
                                            "member_count", "candidate", "noise_seed", "guidance_scale", "p2p_fraction",
                                            "identity_member", "score_notes"}
    return f"attribute_{attribute}" if attribute in taken else attribute


def hf_schema(attributes: list[str], weighted: bool) -> pa.Schema:
    fields = [pa.field("image", IMAGE), *(pa.field(name, pa.string()) for name in TEXT[:4]),
              pa.field("member_index", pa.int64()), pa.field("member_count", pa.int64()),
              *(pa.field(name, pa.string()) for name in TEXT[4:7]), pa.field("attributes", PAIRS),
              *(pa.field(attribute_column(a), pa.string()) for a in attributes),
              *(pa.field(name, pa.string()) for name in TEXT[7:]), pa.field("conversations", TURNS),
              pa.field("candidate", pa.int64()), pa.field("noise_seed", pa.int64()),
              pa.field("guidance_scale", pa.float64()), pa.field("p2p_fraction", pa.float64()),
              *(pa.field(name, pa.float64()) for name in SCORE_NAMES),
              pa.field("score_notes", pa.string()), pa.field("identity_member", pa.bool_())]
    if weighted:
        fields.append(pa.field("weight", pa.float64()))
    features = {"image": {"_type": "Image"}}  # the other columns' types follow from Arrow's
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


def hf_row(member: ExportMember, attributes: list[str]) -> dict:
    meta = member.meta
    values = member.attributes
    row = {"image": {"bytes": member.jpeg, "path": member.image_name},
           **{name: meta[name] for name in TEXT}, "member_index": meta["member_index"],
           "member_count": meta["member_count"], "attributes": meta["attributes"],
           **{attribute_column(a): values.get(a) for a in attributes}, "conversations": meta["conversations"],
           "candidate": meta["candidate"], "noise_seed": meta["noise_seed"],
           "guidance_scale": meta["guidance_scale"], "p2p_fraction": meta["p2p_fraction"],
           **{name: meta["scores"][name] for name in SCORE_NAMES},
           "score_notes": meta["score_notes"], "identity_member": meta["identity_member"]}
    if member.weight is not None:
        row["weight"] = member.weight
    return row


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>10M")


def card(name: str, license_id: str | None, rows: int, files: int, body: str) -> str:
    front = [
        "---",
        f"pretty_name: {json.dumps(name)}",
        f"license: {(license_id or 'other').lower()}",
        "task_categories:", "- image-text-to-text", "- visual-question-answering", "- zero-shot-image-classification",
        "tags:", "- synthetic", "- counterfactual", "- fairness", "- bias", "- counterfactory",
        "size_categories:", f"- {size_category(rows)}",
        "configs:", "- config_name: default", "  data_files:", "  - split: train", f"    path: {DATA_DIR}/train-*.parquet",
        "---",
        "",
    ]
    usage = ["## Loading", "", "```python", "import datasets",
             f"ds = datasets.load_dataset(\"path/to/this/folder\", split=\"train\")  # {rows} rows in {files} file(s)",
             "ds[0][\"image\"], ds[0][\"concept\"], ds[0][\"attributes\"]", "```", ""]
    return "\n".join(front) + body.rstrip("\n") + "\n\n" + "\n".join(usage)


def write_hf(members: Iterable[ExportMember], dest: Path, attributes: list[str], weighted: bool,
             name: str, license_id: str | None, card_body: str) -> dict:
    schema = hf_schema(attributes, weighted)
    data = dest / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    parts, batch, rows = [], [], 0

    def flush():
        part = data / f".part-{len(parts):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(batch, schema=schema), part, compression="zstd")
        parts.append(part)
        batch.clear()

    for member in members:
        batch.append(hf_row(member, attributes))
        rows += 1
        if len(batch) == ROWS_PER_FILE:
            flush()
    if batch or not parts:
        flush()
    for index, part in enumerate(parts):
        part.rename(data / f"train-{index:05d}-of-{len(parts):05d}.parquet")
    (dest / "README.md").write_text(card(name, license_id, rows, len(parts), card_body), encoding="utf-8")
    return {"records": rows, "files": ["README.md", f"{DATA_DIR}/"], "use": f"datasets.load_dataset({str(dest)!r})"}

"""The members an export writes: selected from the manifests like the readers, with an optional weight
per member joined by ``(set_id, member_id)`` from a user's table (``counterfactory asd`` writes one)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pipeline.trainers.member_table import TableError, read_member_table, rows_by_member
from pipeline.trainers.readers import accepted_members, iter_member_files
from schemas.keys import KeyFormatError, validate_key
from schemas.sample import IMAGE_FILE, attribute_dict


class ExportError(ValueError):
    """Why an export cannot be written, in one line."""


@dataclass
class ExportMember:
    key: str
    meta: dict  # the member sample's JSON
    jpeg: bytes  # as written to the shard, provenance metadata included
    weight: float | None = None

    @property
    def image_name(self) -> str:
        return f"{self.key}.{IMAGE_FILE}"

    @property
    def attributes(self) -> dict[str, str]:
        return attribute_dict(self.meta["attributes"])


def parse_values(pairs: list[str] | None) -> dict[str, str]:
    """``["gender=female"]`` -> ``{"gender": "female"}``."""
    values = {}
    for pair in pairs or []:
        attribute, sep, value = pair.partition("=")
        if not sep or not attribute or not value:
            raise ExportError(f"--value {pair!r}: expected ATTRIBUTE=VALUE, e.g. gender=female")
        values[attribute] = value
    return values


def _weight(value, path: str, ident: tuple[str, str]) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise TableError(f"{path}: weight {value!r} of {ident[0]}/{ident[1]} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise TableError(f"{path}: weight {value!r} of {ident[0]}/{ident[1]} must be a finite number >= 0")
    return weight


def export_members(output: str, weights: str | None = None, **select) -> Iterator[ExportMember]:
    """Accepted members matching ``select`` (concept, axis, values), in shard order, with their weights."""
    table = accepted_members(output, **select)
    if table.num_rows == 0:
        raise ExportError(f"{output}: no accepted member matches the selection {select or '(all)'}")
    weight_of = {}
    if weights:
        everything = accepted_members(output)
        accepted = set(zip(everything.column("set_id").to_pylist(), everything.column("member_id").to_pylist()))
        rows = rows_by_member(weights, read_member_table(weights, ("weight",)), accepted)
        wanted = list(zip(table.column("set_id").to_pylist(), table.column("member_id").to_pylist()))
        missing = [i for i in wanted if i not in rows]
        if missing:
            named = ", ".join(f"{s}/{m}" for s, m in missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise TableError(f"{weights}: no weight for {len(missing)} selected member(s): {named}")
        weight_of = {i: _weight(rows[i]["weight"], weights, i) for i in wanted}
    for key, meta, jpeg in iter_member_files(output, **select):
        try:  # the file name every format writes: a key only (the manifest's keys are checked on read too)
            validate_key(key, "member sample key")
        except KeyFormatError as exc:
            raise ExportError(f"{output}: {exc}; refusing to export this output") from None
        yield ExportMember(key, meta, jpeg, weight_of.get((meta["set_id"], meta["member_id"])))


def turns(member: ExportMember) -> list[dict]:
    """The member's turns, checked as LLaVA's and LLaMA-Factory's loaders need them: human first, roles
    alternating, a gpt answer last, no empty turn; the image placeholder removed (each format places its own)."""
    conversation = member.meta["conversations"]
    if not conversation:
        raise ExportError(f"member {member.key} has no conversations: the run's taxonomy defines none "
                          "(taxonomy `conversations:`), and a chat format needs them")
    out = []
    for index, turn in enumerate(conversation):
        expected = "human" if index % 2 == 0 else "gpt"
        text = turn["value"].replace("<image>", "").strip()
        if turn["from"] != expected or not text:
            raise ExportError(f"member {member.key}: turn {index} is {turn['from']!r} "
                              f"{'(empty)' if not text else ''}; turns must alternate human, gpt, ... with text")
        out.append({"from": turn["from"], "value": text})
    if out[-1]["from"] != "gpt":
        raise ExportError(f"member {member.key}: the conversation ends on a question, without an answer")
    return out


IMAGES_DIR = "images"


def write_json_records(members: Iterable[ExportMember], dest: Path, data_file: str,
                       record: Callable[[ExportMember], dict]) -> int:
    """A chat format's export: one JSON list of ``record(member)`` in ``dest/data_file``, each member's
    JPEG copied as written (provenance included) into ``dest/images/``. Returns the records written."""
    images = dest / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for member in members:
        records.append(record(member))
        (images / member.image_name).write_bytes(member.jpeg)
    (dest / data_file).write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(records)

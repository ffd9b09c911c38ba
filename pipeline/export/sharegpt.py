"""LLaMA-Factory's multimodal ``sharegpt`` form: ``messages`` of ``{"role", "content"}``, ``images`` (paths
relative to ``media_dir``, which defaults to the dataset_dir), one ``<image>`` per image, and the
``dataset_info.json`` entry that registers the file. Its converter drops a sample whose roles do not
alternate user/assistant, and its mm_plugin raises when placeholders and images differ in number; the
member's turns are checked for both before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from pipeline.export.members import IMAGES_DIR, ExportMember, turns, write_json_records

DATA_FILE = "counterfactory_sharegpt.json"
INFO_FILE = "dataset_info.json"
IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}


def sharegpt_record(member: ExportMember) -> dict:
    messages = [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns(member)]
    messages[0]["content"] = IMAGE_TOKEN + messages[0]["content"]
    record = {"messages": messages, "images": [f"{IMAGES_DIR}/{member.image_name}"], "id": member.key}
    if member.weight is not None:
        record["weight"] = member.weight
    return record


def dataset_info(name: str) -> dict:
    return {name: {
        "file_name": DATA_FILE,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
    }}


def write_sharegpt(members: Iterable[ExportMember], dest: Path, name: str = "counterfactory") -> dict:
    count = write_json_records(members, dest, DATA_FILE, sharegpt_record)
    info_path = dest / INFO_FILE
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info.update(dataset_info(name))  # keeps the other datasets a shared dataset_info.json registers
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"records": count, "files": [DATA_FILE, INFO_FILE, f"{IMAGES_DIR}/"],
            "use": f"dataset: {name}, dataset_dir: {dest}"}

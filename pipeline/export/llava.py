"""LLaVA-1.5's fine-tuning input: one JSON list (``--data_path``) and an images folder (``--image_folder``).

What ``LazySupervisedDataset`` (llava/train/train.py) reads: per record ``id``, ``image`` (joined to the image
folder with os.path.join, so relative), ``conversations`` of ``{"from": "human"|"gpt", "value"}``, exactly
one ``<image>`` placed at the start of the first human turn and followed by a newline (its
``preprocess_multimodal`` moves it there anyway). Extra keys such as ``weight`` are ignored by LLaVA's loader
and read by ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pipeline.export.members import IMAGES_DIR, ExportMember, turns, write_json_records

DATA_FILE = "llava.json"
IMAGE_TOKEN = "<image>"


def llava_record(member: ExportMember) -> dict:
    conversation = turns(member)
    conversation[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{conversation[0]['value']}"}
    record = {"id": member.key, "image": member.image_name, "conversations": conversation}
    if member.weight is not None:
        record["weight"] = member.weight
    return record


def write_llava(members: Iterable[ExportMember], dest: Path) -> dict:
    count = write_json_records(members, dest, DATA_FILE, llava_record)
    return {"records": count, "files": [DATA_FILE, f"{IMAGES_DIR}/"],
            "use": f"--data_path {dest / DATA_FILE} --image_folder {dest / IMAGES_DIR}"}

"""An output's contents as the report needs them: manifests, run record, thumbnails."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow.parquet as pq

from pipeline.output.manifest import group_sets, read_all
from pipeline.output.storage import Storage
from schemas.layout import RUN_FILE, SIZES_FILE, THUMBS_DIR


@dataclass
class OutputContents:
    storage: Storage
    manifest: list[dict]
    run: dict
    sizes: dict

    @classmethod
    def load(cls, storage: Storage) -> "OutputContents":
        rows = read_all(storage).to_pylist()  # every version as today's schema, keys checked (output/manifest.py)
        run = json.loads(storage.read_bytes(RUN_FILE)) if storage.exists(RUN_FILE) else {}
        sizes = json.loads(storage.read_bytes(SIZES_FILE)) if storage.exists(SIZES_FILE) else {}
        return cls(storage=storage, manifest=rows, run=run, sizes=sizes)

    def sets(self) -> list[dict]:
        """One entry per (seed, set) in seed order (output/manifest.py's group_sets), with its candidate rows."""
        out = []
        for entry in group_sets(self.manifest):
            first = entry["rows"][0]
            out.append({"set_id": first["set_id"], "seed_index": first["seed_index"], "axis": first["axis"],
                        "concept": first["concept"], "set_status": first["set_status"], "caption": first["caption"],
                        "source_uri": first["source_uri"], "candidates": entry["rows"]})
        return out

    def thumbnails(self, set_ids: set[str]) -> dict[tuple, bytes]:
        """(set_id, member_id, candidate) -> JPEG bytes for the wanted sets (candidate None for src)."""
        out: dict[tuple, bytes] = {}
        for name in self.storage.list(THUMBS_DIR):
            if not name.endswith(".parquet"):
                continue
            table = pq.read_table(self.storage.open_input(THUMBS_DIR, name))
            for row in table.to_pylist():
                if row["set_id"] in set_ids:
                    out[(row["set_id"], row["member_id"], row["candidate"])] = row["jpeg"]
        return out

"""An output's contents as the report needs them: manifests, run record, thumbnails."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.output.storage import Storage
from schemas.layout import MANIFEST_DIR, RUN_FILE, SIZES_FILE, THUMBS_DIR


@dataclass
class OutputContents:
    storage: Storage
    manifest: list[dict]
    run: dict
    sizes: dict

    @classmethod
    def load(cls, storage: Storage) -> "OutputContents":
        tables = [pq.read_table(storage.open_input(MANIFEST_DIR, name)) for name in storage.list(MANIFEST_DIR)
                  if name.endswith(".parquet")]
        rows = pa.concat_tables(tables).to_pylist() if tables else []
        run = json.loads(storage.read_bytes(RUN_FILE)) if storage.exists(RUN_FILE) else {}
        sizes = json.loads(storage.read_bytes(SIZES_FILE)) if storage.exists(SIZES_FILE) else {}
        return cls(storage=storage, manifest=rows, run=run, sizes=sizes)

    def sets(self) -> list[dict]:
        """One entry per (seed, set) in seed order, with its candidate rows."""
        grouped: dict[tuple, dict] = {}
        for row in self.manifest:
            key = (row["seed_index"], row["set_id"])
            entry = grouped.setdefault(key, {
                "set_id": row["set_id"], "seed_index": row["seed_index"], "axis": row["axis"],
                "concept": row["concept"], "set_status": row["set_status"], "caption": row["caption"],
                "source_uri": row["source_uri"], "candidates": [],
            })
            entry["candidates"].append(row)
        return [grouped[k] for k in sorted(grouped)]

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

"""The sets of an output as the review page shows them: one entry per set in seed order, each member's shown
candidate (the accepted one, else the first), and the images, read by offset from the tars (or from the
run's originals once a review has removed them) and from the thumbnail index for candidates not in a tar."""

from __future__ import annotations

import json
import tarfile
import threading
from collections import defaultdict

import pyarrow.parquet as pq

from pipeline.output.manifest import manifest_name_of_tar, read_manifests, sets_by_id, stored_columns
from pipeline.output.storage import Storage
from schemas.layout import REVIEW_ORIGINALS_DIR, SETS_DIR, SHARDS_DIR, THUMBS_DIR
from schemas.records import SCORE_NAMES, STATUS_ACCEPTED
from schemas.sample import IMAGE_FILE, THUMB_SOURCE_ID, member_key

SEED = THUMB_SOURCE_ID  # the seed's name where a member id goes (image URLs, thumbnails)


def _shown(candidates: list[dict]) -> dict:
    accepted = [c for c in candidates if c["status"] == STATUS_ACCEPTED]
    return accepted[0] if accepted else min(candidates, key=lambda c: c["candidate"] if c["candidate"] is not None else -1)


class Catalog:
    def __init__(self, storage: Storage):
        self.storage = storage
        self.sets: dict[str, dict] = {}
        rows = []
        self.columns: set[str] = set()  # the columns the manifests hold (an older version's lack some, read as null)
        for name, table in read_manifests(storage):  # any declared schema version, keys checked
            rows += [dict(row, manifest=name) for row in table.to_pylist()]
            self.columns.update(stored_columns(storage, name))
        # the rows of the seed that made each set (a later copy of the seed shares its set ids, as error rows)
        for set_id, entry in sets_by_id(rows).items():
            first = entry["rows"][0]
            by_member: dict[str, list[dict]] = defaultdict(list)
            for row in entry["rows"]:
                by_member[row["member_id"]].append(row)
            self.sets[set_id] = {
                "set_id": set_id, "seed_index": first["seed_index"], "concept": first["concept"] or "",
                "axis": first["axis"], "status": first["set_status"], "caption": first["caption"],
                "source": first["source_uri"], "manifest": first["manifest"],
                "members": {m: _shown(c) for m, c in by_member.items()},
            }
        self._tar_index: dict[tuple, dict[str, tuple[int, int]]] = {}
        self._thumbs: dict[str, dict[tuple, bytes]] = {}
        self._lock = threading.Lock()

    def members_of(self) -> dict[str, list[str]]:
        return {set_id: list(entry["members"]) for set_id, entry in self.sets.items()}

    def summaries(self) -> list[dict]:
        keys = ("set_id", "seed_index", "concept", "axis", "status")
        return [{k: entry[k] for k in keys} for entry in self.sets.values()]

    def detail(self, set_id: str) -> dict:
        entry = self.sets[set_id]
        members = []
        for member_id, row in entry["members"].items():
            members.append({
                "member_id": member_id, "attributes": json.loads(row["attributes"] or "{}"),
                "candidate": row["candidate"], "status": row["status"], "reason": row["reason"],
                "scores": {k: row[k] for k in SCORE_NAMES if row[k] is not None},
                "in_shards": row["shard"] is not None, "review_verdict": row.get("review_verdict"),
            })
        keys = ("set_id", "seed_index", "concept", "axis", "status", "caption", "source")
        return {**{k: entry[k] for k in keys}, "members": members}

    def _index(self, folder: str, tar_name: str) -> dict[str, tuple[int, int]]:
        info = self.storage.fs.get_file_info(self.storage.path(folder, tar_name))
        key = (folder, tar_name, info.size, info.mtime_ns)  # review apply may rewrite a tar under a live server
        if key not in self._tar_index:
            found = {}
            if info.size is not None:
                with self.storage.open_input(folder, tar_name) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                    found = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
            self._tar_index[key] = found
        return self._tar_index[key]

    def _from_tar(self, family: str, tar_name: str, file_name: str) -> bytes | None:
        for folder in (family, f"{REVIEW_ORIGINALS_DIR}/{family}"):
            with self._lock:
                where = self._index(folder, tar_name).get(file_name)
            if where is not None:
                with self.storage.open_input(folder, tar_name) as handle:
                    return handle.read_at(where[1], where[0])
        return None

    def _thumb(self, manifest: str, key: tuple) -> bytes | None:
        with self._lock:
            if manifest not in self._thumbs:
                table = pq.read_table(self.storage.open_input(THUMBS_DIR, manifest)) \
                    if self.storage.exists(THUMBS_DIR, manifest) else None
                self._thumbs[manifest] = {} if table is None else {
                    (r["set_id"], r["member_id"], r["candidate"]): r["jpeg"] for r in table.to_pylist()}
            return self._thumbs[manifest].get(key)

    def image(self, set_id: str, member_id: str) -> bytes | None:
        """A member's shown image (``SEED``: the seed): full size from a tar when it has one, else the thumbnail."""
        entry = self.sets[set_id]
        tar_name = manifest_name_of_tar(entry["manifest"])
        if member_id == SEED:
            found = self._from_tar(SETS_DIR, tar_name, f"{set_id}.{IMAGE_FILE}") \
                if entry["status"] == STATUS_ACCEPTED else None
            return found or self._thumb(entry["manifest"], (set_id, SEED, None))
        row = entry["members"][member_id]
        found = None
        if entry["status"] == STATUS_ACCEPTED and row["status"] == STATUS_ACCEPTED:
            found = self._from_tar(SHARDS_DIR, tar_name, f"{member_key(set_id, member_id)}.{IMAGE_FILE}")
        return found or self._thumb(entry["manifest"], (set_id, member_id, row["candidate"]))

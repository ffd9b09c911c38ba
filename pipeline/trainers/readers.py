"""Readers for trainers: accepted sets or flattened members of an output, with their labels.

Selection (concept, axis, attribute values) is answered from the parquet manifests without opening a
tar; only the shards that hold selected samples are read. Three ways to read:

    for s in iter_sets("out/mini", concept="chef"): s["src"], s["members"]["female"], s["meta"]
    for m in iter_members("out/mini", values={"gender": "female"}): m["image"], m["attributes"]
    torch.utils.data.DataLoader(MemberDataset("out/mini"), num_workers=4)   # shards split over workers
    ray_dataset("out/mini")                                                 # ray.data.read_webdataset
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from pipeline.output.storage import Storage
from pipeline.output.verify import read_tar_samples
from schemas.layout import MANIFEST_DIR, SHARDS_DIR
from schemas.records import STATUS_ACCEPTED
from schemas.sample import JSON_FILE, SOURCE_FILE


def accepted_members(output: str, concept: str | None = None, axis: str | None = None,
                     values: dict[str, str] | None = None) -> pa.Table:
    """Manifest rows of accepted members, filtered; reads only the manifests."""
    storage = Storage(output)
    tables = [pq.read_table(storage.open_input(MANIFEST_DIR, n)) for n in storage.list(MANIFEST_DIR) if n.endswith(".parquet")]
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables)
    table = table.filter(pc.equal(table.column("status"), STATUS_ACCEPTED))
    if concept is not None:
        table = table.filter(pc.equal(table.column("concept"), concept))
    if axis is not None:
        table = table.filter(pc.equal(table.column("axis"), axis))
    if values:
        keep = [all(json.loads(a).get(k) == v for k, v in values.items()) for a in table.column("attributes").to_pylist()]
        table = table.filter(pa.array(keep, type=pa.bool_()))
    return table


def _selected(output: str, **select) -> dict[str, dict[str, set[str]]]:
    """shard -> sample key -> member files wanted."""
    wanted: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in accepted_members(output, **select).to_pylist():
        wanted[row["shard"]][row["sample_key"]].add(row["member_id"])
    return wanted


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _iter_shard_sets(storage: Storage, shard: str, keys: dict[str, set[str]]) -> Iterator[dict]:
    for key, files in read_tar_samples(storage.read_bytes(SHARDS_DIR, shard)).items():
        if key not in keys:
            continue
        meta = json.loads(files[JSON_FILE])
        yield {
            "set_id": key,
            "meta": meta,
            "src": _image(files[SOURCE_FILE]),
            "members": {m["member_id"]: _image(files[m["file"]]) for m in meta["members"] if m["member_id"] in keys[key]},
        }


def iter_sets(output: str, shards: list[str] | None = None, **select) -> Iterator[dict]:
    """Accepted sets (seed image, member images, sample JSON), in shard order; ``select`` as accepted_members."""
    storage = Storage(output)
    wanted = _selected(output, **select)
    for shard in sorted(wanted):
        if shards is None or shard in shards:
            yield from _iter_shard_sets(storage, shard, wanted[shard])


def _flatten(s: dict) -> Iterator[dict]:
    meta = s["meta"]
    for member in meta["members"]:
        if member["member_id"] in s["members"]:
            yield {
                "key": f"{s['set_id']}-{member['member_id']}",
                "set_id": s["set_id"],
                "member_id": member["member_id"],
                "image": s["members"][member["member_id"]],
                "source": s["src"],
                "attributes": member["attributes"],
                "concept": meta["concept"],
                "axis": meta["axis"],
                "target_caption": member["target_caption"],
                "conversations": member.get("conversations", []),
                "scores": member["scores"],
            }


def iter_members(output: str, shards: list[str] | None = None, **select) -> Iterator[dict]:
    """One item per accepted member image, labelled with its attributes, concept and axis."""
    for s in iter_sets(output, shards=shards, **select):
        yield from _flatten(s)


def _torch_base():
    import torch.utils.data

    return torch.utils.data.IterableDataset


class MemberDataset(_torch_base()):
    """PyTorch IterableDataset of members (or whole sets); each DataLoader worker reads its own shards.

    With ``rank``/``world_size`` (distributed training) shards are split over ranks first, then workers.
    """

    def __init__(self, output: str, sets: bool = False, transform=None, rank: int = 0, world_size: int = 1, **select):
        self.output, self.sets, self.transform = output, sets, transform
        self.rank, self.world_size, self.select = rank, world_size, select
        self.shards = sorted(_selected(output, **select))

    def my_shards(self) -> list[str]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        part = self.rank * workers + worker
        return self.shards[part :: self.world_size * workers]

    def __iter__(self):
        read = iter_sets if self.sets else iter_members
        for item in read(self.output, shards=self.my_shards(), **self.select):
            yield self.transform(item) if self.transform else item


def ray_dataset(output: str):
    """The shards as a Ray Dataset (one row per sample: ``__key__``, ``src.jpg``, member files, ``json``)."""
    import ray.data

    storage = Storage(output)
    return ray.data.read_webdataset([storage.path(SHARDS_DIR, n) for n in storage.list(SHARDS_DIR) if n.endswith(".tar")],
                                    decoder=None, filesystem=storage.fs)

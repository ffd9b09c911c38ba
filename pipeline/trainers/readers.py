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
from PIL import Image

from pipeline.output.manifest import read_all
from pipeline.output.storage import Storage
from pipeline.output.verify import read_tar_samples
from schemas.layout import SETS_DIR, SHARDS_DIR
from schemas.sample import IMAGE_FILE, JSON_FILE, attribute_dict


def accepted_members(output: str, concept: str | None = None, axis: str | None = None,
                     values: dict[str, str] | None = None) -> pa.Table:
    """Manifest rows of the members in the shards, filtered; reads only the manifests (any declared schema
    version, keys checked: pipeline/output/manifest.py)."""
    table = read_all(Storage(output))
    table = table.filter(pc.is_valid(table.column("shard")))  # records.in_shards: accepted and not vetoed in review
    if concept is not None:
        table = table.filter(pc.equal(table.column("concept"), concept))
    if axis is not None:
        table = table.filter(pc.equal(table.column("axis"), axis))
    if values:
        keep = [all(json.loads(a).get(k) == v for k, v in values.items()) for a in table.column("attributes").to_pylist()]
        table = table.filter(pa.array(keep, type=pa.bool_()))
    return table


def _selected(output: str, **select) -> dict[str, dict[str, list[str]]]:
    """shard -> set_id -> member sample keys wanted, in manifest order."""
    wanted: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in accepted_members(output, **select).to_pylist():
        wanted[row["shard"]][row["set_id"]].append(row["sample_key"])
    return wanted


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _member_item(key: str, meta: dict, jpeg: bytes) -> dict:
    return {
        "key": key,
        "set_id": meta["set_id"],
        "member_id": meta["member_id"],
        "member_index": meta["member_index"],
        "image": _image(jpeg),
        "attributes": attribute_dict(meta["attributes"]),
        "concept": meta["concept"],
        "axis": meta["axis"],
        "target_caption": meta["target_caption"],
        "conversations": meta["conversations"],
        "scores": meta["scores"],
        "meta": meta,
    }


def iter_member_files(output: str, shards: list[str] | None = None, **select) -> Iterator[tuple[str, dict, bytes]]:
    """``(key, member JSON, JPEG bytes as written)`` per selected member, in shard order; reads shards/ only.
    Exports use it as it is, copying the files (and the provenance they carry) without decoding them."""
    storage = Storage(output)
    wanted = _selected(output, **select)
    for shard in sorted(wanted):
        if shards is not None and shard not in shards:
            continue
        keys = {key for members in wanted[shard].values() for key in members}
        for key, files in read_tar_samples(storage.read_bytes(SHARDS_DIR, shard)).items():
            if key in keys:
                yield key, json.loads(files[JSON_FILE]), files[IMAGE_FILE]


def _iter_shard_sets(storage: Storage, shard: str, sets: dict[str, list[str]]) -> Iterator[dict]:
    members = read_tar_samples(storage.read_bytes(SHARDS_DIR, shard))
    for set_id, files in read_tar_samples(storage.read_bytes(SETS_DIR, shard)).items():
        if set_id not in sets:
            continue
        meta = json.loads(files[JSON_FILE])
        chosen = [_member_item(m["key"], json.loads(members[m["key"]][JSON_FILE]), members[m["key"]][IMAGE_FILE])
                  for m in meta["members"] if m["key"] in sets[set_id]]
        yield {
            "set_id": set_id,
            "meta": meta,
            "src": _image(files[IMAGE_FILE]),
            "members": {m["member_id"]: m["image"] for m in chosen},
            "member_meta": {m["member_id"]: m["meta"] for m in chosen},
        }


def iter_sets(output: str, shards: list[str] | None = None, **select) -> Iterator[dict]:
    """Accepted sets (source image, member images in set order, set and member JSON), in shard order;
    ``select`` as accepted_members (a set appears when any of its members is selected)."""
    storage = Storage(output)
    wanted = _selected(output, **select)
    for shard in sorted(wanted):
        if shards is None or shard in shards:
            yield from _iter_shard_sets(storage, shard, wanted[shard])


def iter_members(output: str, shards: list[str] | None = None, **select) -> Iterator[dict]:
    """One item per accepted member image, labelled with its attributes, concept and axis; reads shards/ only."""
    for key, meta, jpeg in iter_member_files(output, shards=shards, **select):
        yield _member_item(key, meta, jpeg)


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


def ray_dataset(output: str, sets: bool = False):
    """The member shards (or with ``sets`` the set shards) as a Ray Dataset read by Ray's own webdataset
    reader with its default decoder: one row per sample, ``__key__``, ``jpg`` (an image array), ``json`` (a dict)."""
    import ray.data

    storage = Storage(output)
    folder = SETS_DIR if sets else SHARDS_DIR
    return ray.data.read_webdataset([storage.path(folder, n) for n in storage.list(folder) if n.endswith(".tar")],
                                    filesystem=storage.fs)

"""Shard writing against the plain script: encode the same images and add them with tarfile.

Both write one tar per shard from the same rows (accepted sets of ``--members`` members at ``--size``
px). A run splits the work: the encode stage (stages/encode.py, a CPU actor pool) makes every file's
bytes, JPEGs with provenance metadata and thumbnails; the shard writer on the driver assembles the
tar, the parquet manifest and the thumbnail index and renames them into place. Reported:

- ``writer``: the driver's shard writer on encoded rows, against the plain script's encode + tarfile
  and against tarfile alone writing the same (already encoded) bytes;
- ``one_core``: encode stage + writer in one process, against encode + tarfile: the total CPU cost
  of what a run writes beyond the plain script (thumbnails, EXIF/XMP, manifest), with and without
  thumbnails.

Prints JSON.

    python benchmarks/writer.py [--sets 64] [--members 6] [--size 256]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import common  # noqa: F401,E402  (puts the repository on sys.path, offline Hub)

from pipeline.output.shard_writer import ShardWriter  # noqa: E402
from pipeline.output.storage import Storage  # noqa: E402
from stages.encode import SampleEncoder, ShardConfig  # noqa: E402
from stages.utils.imaging import encode_jpeg, from_raw  # noqa: E402

PROVENANCE = {"models": {"captioner": "c", "editor": "e", "clip": "k"}, "revisions": {}, "generation": {},
              "run_seed": 0, "config_hash": "bench", "concept_groups": {}}


def make_rows(sets: int, members: int, size: int) -> list[dict]:
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(members)]

    def raw():
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([x * 200, y * 200, (x + y) * 60], -1) + rng.normal(0, 8, (size, size, 3))
        return np.clip(base, 0, 255).astype(np.uint8).tobytes()

    rows = []
    for i in range(sets):
        rows.append({
            "seed_index": i, "shard_index": 0, "source_uri": f"s/{i}.png", "source_member": None, "concept": "chef",
            "caption": "a person cooking", "seed_id": f"s{i}", "image_rgb": raw(), "width": size, "height": size,
            "status": "ok", "error": None, "set_id": f"s{i}-axis", "axis": "axis", "concept_source": "source",
            "members": [{"member_id": m, "attributes": [{"attribute": "a", "value": m}], "phrase": m,
                         "target_caption": f"a {m} cooking", "instruction": f"make {m}", "conversations": []}
                        for m in names],
            "candidate_seeds": [1],
            "candidates": [{"member_id": m, "candidate": 0, "noise_seed": 1, "image_rgb": raw(), "width": size,
                            "height": size, "status": "accepted", "failed_checks": []} for m in names],
            "set_status": "accepted", "set_reason": None,
        })
    return rows


def add_files(path: Path, files: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def plain_files(rows: list[dict], quality: int) -> list[tuple[str, bytes]]:
    """What the plain script writes: each image encoded as JPEG, and a small JSON per set."""
    files = []
    for row in rows:
        files.append((f"{row['set_id']}.src.jpg", encode_jpeg(from_raw(row["image_rgb"], row["width"], row["height"]), quality)))
        for cand in row["candidates"]:
            files.append((f"{row['set_id']}.{cand['member_id']}.jpg",
                          encode_jpeg(from_raw(cand["image_rgb"], cand["width"], cand["height"]), quality)))
        files.append((f"{row['set_id']}.json", json.dumps({"set_id": row["set_id"]}).encode()))
    return files


def encoded_files(rows: list[dict]) -> list[tuple[str, bytes]]:
    """The files of the writer's two tars (member samples, then set samples), from encoded rows."""
    files = []
    for row in rows:
        for cand in row["candidates"]:
            key = f"{row['set_id']}-{cand['member_id']}"
            files += [(f"{key}.jpg", cand["jpeg"]), (f"{key}.json", cand["member_json"])]
    for row in rows:
        files += [(f"{row['set_id']}.jpg", row["src_jpeg"]), (f"{row['set_id']}.json", row["set_json"])]
    return files


def best_of(repeat: int, fn, prepare=lambda: None) -> float:
    times = []
    for _ in range(repeat):
        argument = prepare()
        started = time.perf_counter()
        fn(argument)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=int, default=64)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    # Memory-backed by default: the CPU cost is measured, not the disk's write-back (both sides write the same)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    rows = make_rows(args.sets, args.members, args.size)
    images = args.sets * (args.members + 1)
    result = {"benchmark": "writer", "sets": args.sets, "images": images, "size": args.size, "dir": args.dir}

    def rate(seconds: float) -> float:
        return round(images / seconds, 1)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        plain = best_of(args.repeat, lambda _: add_files(Path(tmp) / "plain.tar", plain_files(rows, 95)))
        result["plain_encode_and_tarfile_images_per_s"] = rate(plain)
        for name, thumbnail_size in (("default", 96), ("no_thumbnails", 0)):
            config = ShardConfig(prefix="w", thumbnail_size=thumbnail_size)
            encoder = SampleEncoder(config, PROVENANCE)
            writer = ShardWriter(config, Storage(os.path.join(tmp, name)), PROVENANCE)
            writer.setup()
            encoded = encoder.process_rows(copy.deepcopy(rows))
            write = best_of(args.repeat, lambda _: writer.write_shard(0, encoded))
            one_core = best_of(args.repeat, lambda fresh: writer.write_shard(0, encoder.process_rows(fresh)),
                               prepare=lambda: copy.deepcopy(rows))
            if name == "default":
                same_bytes = best_of(args.repeat, lambda _: add_files(Path(tmp) / "same.tar", encoded_files(encoded)))
                result["tarfile_of_the_same_bytes_images_per_s"] = rate(same_bytes)
                result["writer_images_per_s"] = rate(write)
                result["writer_vs_plain_script"] = round(plain / write, 3)
                result["writer_vs_tarfile_of_the_same_bytes"] = round(same_bytes / write, 3)
            result[f"one_core_{name}_images_per_s"] = rate(one_core)
            result[f"one_core_{name}_vs_plain_script"] = round(plain / one_core, 3)
    result["target"] = "writer >= 0.9 x plain tarfile"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

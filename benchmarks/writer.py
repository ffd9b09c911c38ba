"""Shard writer throughput against the plain script: encode the same images and add them with tarfile.

Both write one tar per shard from the same rows (accepted sets of ``--members`` members at ``--size``
px). The writer also writes the parquet manifest, thumbnails and provenance metadata, and renames
into place; the ratio says what that costs. Prints JSON.

    python benchmarks/writer.py [--sets 64] [--members 6] [--size 256]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import common  # noqa: F401,E402  (puts the repository on sys.path, offline Hub)

from stages.imaging import encode_jpeg, from_raw  # noqa: E402
from stages.shard_writer import ShardConfig, ShardWriter  # noqa: E402
from stages.storage import Storage  # noqa: E402

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


def plain_tarfile(rows: list[dict], path: Path, quality: int) -> None:
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for row in rows:
            add(f"{row['set_id']}.src.jpg", encode_jpeg(from_raw(row["image_rgb"], row["width"], row["height"]), quality))
            for cand in row["candidates"]:
                add(f"{row['set_id']}.{cand['member_id']}.jpg",
                    encode_jpeg(from_raw(cand["image_rgb"], cand["width"], cand["height"]), quality))
            add(f"{row['set_id']}.json", json.dumps({"set_id": row["set_id"]}).encode())


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=int, default=64)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = make_rows(args.sets, args.members, args.size)
    images = args.sets * (args.members + 1)
    result = {"benchmark": "writer", "sets": args.sets, "images": images, "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        plain = best_of(args.repeat, lambda: plain_tarfile(rows, Path(tmp) / "plain.tar", 95))
        variants = {
            "writer_default": ShardConfig(prefix="w"),
            "writer_no_thumbnails": ShardConfig(prefix="w", thumbnail_size=0),
        }
        result["plain_tarfile_images_per_s"] = round(images / plain, 1)
        for name, config in variants.items():
            writer = ShardWriter(config, Storage(os.path.join(tmp, name)), PROVENANCE)
            writer.setup()
            seconds = best_of(args.repeat, lambda: writer.write_shard(0, rows))
            result[f"{name}_images_per_s"] = round(images / seconds, 1)
            result[f"{name}_vs_tarfile"] = round(plain / seconds, 3)
    result["target"] = "writer >= 0.9 x plain tarfile"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Small builders shared by tests: seed images and stage rows."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

MINI_SEEDS = Path(__file__).resolve().parents[1] / "configs" / "mini_seeds"  # real photos shipped for the mini-run


def png_bytes(width: int = 48, height: int = 40, color=(200, 80, 40), mode: str = "RGB") -> bytes:
    image = Image.new("RGB", (width, height), color)
    array = np.asarray(image).copy()
    array[: height // 2, : width // 3] = (10, 200, 30)  # asymmetric, so orientation changes are visible
    image = Image.fromarray(array).convert(mode)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def seed_row(image: Image.Image, seed_index: int = 0, caption: str | None = "a photo of a man cooking in a kitchen",
             concept: str | None = None, seed_id: str | None = None) -> dict:
    rgb = image.convert("RGB")
    return {
        "seed_index": seed_index, "shard_index": 0, "source_uri": f"mem://{seed_index}.png", "source_member": None,
        "source_seed_id": None, "concept": concept, "caption": caption,
        "seed_id": seed_id or f"seed{seed_index}", "image_rgb": rgb.tobytes(), "width": rgb.width,
        "height": rgb.height, "status": "ok", "error": None,
    }


def error_seed_row(seed_index: int = 0) -> dict:
    return {
        "seed_index": seed_index, "shard_index": 0, "source_uri": f"mem://{seed_index}.jpg", "source_member": None,
        "source_seed_id": None, "concept": None, "caption": None, "seed_id": f"eseed{seed_index}",
        "image_rgb": None, "width": None, "height": None, "status": "error", "error": "ingest: empty file",
    }


def noise_image(seed: int = 0, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


WRITER_PROVENANCE = {  # what run.provenance() passes the encode stage and the shard writer, in small
    "models": {"captioner": "cap", "editor": "edit", "clip": "clip"},
    "generation": {"steps": 2},
    "run_seed": 1,
    "config_hash": "abc123",
    "concept_groups": {"chef": "responsibility"},
}


def write_sets(out, rows: list[dict], index: int = 0, config=None):
    """What a run does with filtered sets: the encode stage, then the driver's shard writer."""
    from stages.encode import SampleEncoder
    from pipeline.output.shard_writer import ShardWriter
    from stages.encode import ShardConfig
    from pipeline.output.storage import Storage

    config = config or ShardConfig(prefix="t")
    writer = ShardWriter(config, Storage(str(out)), WRITER_PROVENANCE)
    writer.setup()
    return writer.write_shard(index, SampleEncoder(config, WRITER_PROVENANCE).process_rows(rows))


def set_row(index: int, status: str, images: dict[str, Image.Image] | None = None, concept: str = "chef") -> dict:
    """A filtered gender set as the shard writer receives it; ``images`` fixes member images."""
    image = noise_image(index, 16)

    def picture(member: str, candidate: int) -> Image.Image:
        return images[member] if images else noise_image(index + candidate, 16)

    members = [
        {"member_id": m, "attributes": [{"attribute": "gender", "value": m}], "phrase": f"a {m}",
         "target_caption": f"a {m} cooking", "instruction": f"turn into a {m}"}
        for m in ("male", "female")
    ]
    candidates = []
    for c in range(2):
        for m in ("male", "female"):
            chosen = c == 0 and status == "accepted"
            candidates.append({
                "member_id": m, "candidate": c, "noise_seed": 100 + c, "image_rgb": picture(m, c).tobytes(),
                "width": picture(m, c).width, "height": picture(m, c).height, "error": None,
                "text_image": 0.3, "directional": 0.25, "image_image": 0.8,
                "attribute_margin": 0.1, "failed_checks": [], "status": "accepted" if chosen else "rejected",
                "reason": None if chosen else "not chosen",
            })
    return {
        "seed_index": index, "shard_index": 0, "source_uri": f"seeds/{index}.png", "source_member": None,
        "source_seed_id": None, "concept": concept, "caption": "a man cooking", "seed_id": f"s{index}",
        "image_rgb": image.tobytes(), "width": 16, "height": 16, "status": "ok", "error": None,
        "set_id": f"s{index}-gender", "axis": "gender", "concept_source": "source", "members": members,
        "candidate_seeds": [100, 101], "candidates": candidates, "set_status": status,
        "set_reason": None if status == "accepted" else "1 of 2 members passed",
    }


@contextmanager
def injected_faults(spec: str):
    """Install a fault spec (stages/utils/faults.py) in this process for the block, and remove it after."""
    from stages.utils import faults

    faults.install(spec)
    try:
        yield
    finally:
        faults.install(None)


def read_output_sets(out) -> dict[str, dict]:
    """set_id -> {"meta": set JSON, "src": source JPEG, "members": {member_id: {"meta": member JSON, "jpg": bytes}}},
    read straight from the tars of both sample families (members in set order)."""
    import json

    from pipeline.output.verify import read_tar_samples

    found = {}
    for tar in sorted((Path(out) / "sets").glob("*.tar")):
        members = read_tar_samples((Path(out) / "shards" / tar.name).read_bytes())
        for set_id, files in read_tar_samples(tar.read_bytes()).items():
            meta = json.loads(files["json"])
            found[set_id] = {"meta": meta, "src": files["jpg"], "members": {
                m["member_id"]: {"meta": json.loads(members[m["key"]]["json"]), "jpg": members[m["key"]]["jpg"]}
                for m in meta["members"]}}
    return found

"""Small builders shared by tests: seed images and stage rows."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


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

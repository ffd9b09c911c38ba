"""A corpus of hostile inputs: each one ends as a normalised seed or an error row with its reason."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from stages.ingest import DecodeSeeds, IngestConfig, list_seeds
from tests.helpers import png_bytes


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "seeds"
    root.mkdir()
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = _save(noise, "JPEG")
    files = {
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "alpha.png": _save(Image.new("RGBA", (40, 40), (10, 20, 30, 0)), "PNG"),
        "palette.png": _save(Image.new("RGB", (40, 40), (200, 10, 10)).convert("P"), "PNG"),
        "cmyk.jpg": _save(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"),
        "sixteen.png": _save(Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)), "PNG"),
        "gray.png": _save(Image.new("L", (40, 40), 90), "PNG"),
        "one_pixel.png": _save(Image.new("RGB", (1, 1)), "PNG"),
        "bomb.png": png_bytes(800, 800),
        "text.jpg": b"just some text, not a JPEG",
        "copy_a.png": png_bytes(48, 48, (1, 2, 3)),
        "copy_b.png": png_bytes(48, 48, (1, 2, 3)),
        ("x" * 240) + ".png": png_bytes(32, 32, (4, 5, 6)),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9t\xe9.png"), "wb") as handle:
        handle.write(png_bytes(32, 32, (7, 8, 9)))
    (root / "folder.jpg").mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(32, 32))
    (root / "escape.png").symlink_to(outside)
    return root


EXPECTED_ERRORS = {
    "zero.jpg": "empty file",
    "truncated.jpg": "image data is corrupt",
    "one_pixel.png": "smaller than min_side",
    "bomb.png": "over max_pixels",
    "text.jpg": "not a decodable image",
    "folder.jpg": "a folder, not an image file",
    "escape.png": "symlink points outside the input folder",
}


def test_every_hostile_input_is_a_seed_or_an_error_row_with_its_reason(corpus):
    config = IngestConfig(path=str(corpus), min_side=8, max_pixels=500 * 500)
    refs = list_seeds(config, seeds_per_shard=100)
    entries = os.listdir(os.fsencode(corpus))
    assert refs.num_rows == len(entries) == 16  # nothing vanished, not even the folder or the symlink
    rows = DecodeSeeds(config)(refs).to_pylist()
    by_name = {os.path.basename(r["source_uri"]): r for r in rows}
    for name, reason in EXPECTED_ERRORS.items():
        assert by_name[name]["status"] == "error" and reason in by_name[name]["error"], (name, by_name[name]["error"])
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) + len(EXPECTED_ERRORS) == len(rows)
    for row in ok:
        assert len(row["image_rgb"]) == row["width"] * row["height"] * 3  # normalised to 8-bit RGB
    assert by_name["copy_a.png"]["seed_id"] == by_name["copy_b.png"]["seed_id"]  # duplicates share the content key
    latin1 = by_name["latin1-\\xe9t\\xe9.png"]
    assert latin1["status"] == "ok" and latin1["source_uri"].encode("utf-8")  # stored as valid UTF-8 text
    assert by_name["x" * 240 + ".png"]["status"] == "ok"
    assert all(len(r["seed_id"]) <= 21 and "." not in r["seed_id"] for r in rows)

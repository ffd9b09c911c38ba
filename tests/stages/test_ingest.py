import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from schemas.records import SEED
from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from tests.helpers import png_bytes


def pixels_of(raw: bytes, width: int, height: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).reshape(int(height), int(width), 3)


def decode(config: IngestConfig, limit=None):
    table = DecodeSeeds(config)(list_seeds(config, seeds_per_shard=2, limit=limit))
    assert table.schema == SEED
    return table.to_pylist()


def image_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_folder_listing_is_sorted_labels_concepts_and_assigns_shards(tmp_path):
    (tmp_path / "chef").mkdir()
    (tmp_path / "chef" / "b.png").write_bytes(png_bytes())
    (tmp_path / "chef" / "a.png").write_bytes(png_bytes(color=(1, 2, 3)))
    (tmp_path / "top.png").write_bytes(png_bytes(color=(9, 9, 9)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(png_bytes())
    refs = list_seeds(IngestConfig(path=str(tmp_path)), seeds_per_shard=2).to_pylist()
    assert [r["source_uri"].rsplit("/", 2)[-2:] for r in refs] == [["chef", "a.png"], ["chef", "b.png"], [tmp_path.name, "top.png"]]
    assert [r["concept"] for r in refs] == ["chef", "chef", None]
    assert [r["shard_index"] for r in refs] == [0, 0, 1]


def test_seed_id_is_a_content_hash_so_renamed_copies_share_it(tmp_path):
    (tmp_path / "one.png").write_bytes(png_bytes())
    (tmp_path / "two.png").write_bytes(png_bytes())
    rows = decode(IngestConfig(path=str(tmp_path)))
    assert rows[0]["seed_id"] == rows[1]["seed_id"] and rows[0]["status"] == "ok"


def test_images_are_normalised_to_rgb_with_orientation_and_size_bounds(tmp_path):
    base = Image.new("RGB", (60, 30), (250, 0, 0))
    base.paste((0, 0, 250), (0, 0, 10, 30))  # a blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (tmp_path / "a_exif.jpg").write_bytes(image_bytes(base, "JPEG", exif=exif, quality=95))
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    (tmp_path / "b_alpha.png").write_bytes(image_bytes(rgba, "PNG"))
    (tmp_path / "c_palette.png").write_bytes(image_bytes(Image.new("RGB", (40, 40), (10, 200, 10)).convert("P"), "PNG"))
    (tmp_path / "d_cmyk.jpg").write_bytes(image_bytes(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"))
    sixteen = Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16))
    (tmp_path / "e_16bit.png").write_bytes(image_bytes(sixteen, "PNG"))
    (tmp_path / "f_gray.png").write_bytes(image_bytes(Image.new("L", (40, 40), 128), "PNG"))
    (tmp_path / "g_big.png").write_bytes(png_bytes(400, 200))
    rows = {r["source_uri"].rsplit("/", 1)[1]: r for r in decode(IngestConfig(path=str(tmp_path), max_side=100))}
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    exif_row = rows["a_exif.jpg"]
    assert (exif_row["width"], exif_row["height"]) == (30, 60)
    pixels = pixels_of(exif_row["image_rgb"], exif_row["width"], exif_row["height"])
    assert pixels[2, 15, 2] > 200 and pixels[-2, 15, 0] > 200  # blue band now on top
    assert tuple(pixels_of(rows["b_alpha.png"]["image_rgb"], 40, 40)[0, 0]) == (255, 255, 255)
    assert tuple(pixels_of(rows["e_16bit.png"]["image_rgb"], 40, 40)[0, 0]) == (255, 255, 255)
    assert tuple(pixels_of(rows["f_gray.png"]["image_rgb"], 40, 40)[0, 0]) == (128, 128, 128)
    assert pixels_of(rows["d_cmyk.jpg"]["image_rgb"], 40, 40)[0, 0, 0] > 200
    assert (rows["g_big.png"]["width"], rows["g_big.png"]["height"]) == (100, 50)


NOISE_JPEG = image_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am text", "not a decodable image"),
        ("truncated.jpg", NOISE_JPEG[: len(NOISE_JPEG) // 2], "corrupt"),
        ("tiny.png", png_bytes(4, 4), "smaller than min_side"),
        ("bomb.png", png_bytes(300, 300), "over max_pixels"),
    ],
)
def test_bad_inputs_become_error_rows_with_a_reason(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    (row,) = decode(IngestConfig(path=str(tmp_path), min_side=8, max_pixels=250 * 250))
    assert row["status"] == "error"
    assert reason in row["error"] and row["error"].startswith("ingest: ")
    assert row["seed_id"].startswith("e") and row["image_rgb"] is None


def test_parquet_list_resolves_relative_paths_and_keeps_bad_rows(tmp_path):
    (tmp_path / "img.png").write_bytes(png_bytes())
    table = pa.table({
        "path": ["img.png", "missing.png", None],
        "seed_id": ["person_1", "person_2", "person_3"],
        "concept": ["chef", None, None],
        "caption": ["a man cooking", None, None],
    })
    pq.write_table(table, tmp_path / "seeds.parquet")
    rows = decode(IngestConfig(kind="parquet", path=str(tmp_path / "seeds.parquet")))
    assert [r["status"] for r in rows] == ["ok", "error", "error"]
    assert rows[0]["seed_id"] == "person_1" and rows[0]["caption"] == "a man cooking" and rows[0]["concept"] == "chef"
    assert "cannot read input" in rows[1]["error"] and "no path given" in rows[2]["error"]


def test_webdataset_input_reads_images_captions_and_flags_samples_without_an_image(tmp_path):
    tar_path = tmp_path / "seeds-000000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in [
            ("p001.jpg", image_bytes(Image.new("RGB", (32, 32), (5, 5, 5)), "JPEG")),
            ("p001.txt", b"a woman at a desk"),
            ("p001.json", b'{"concept": "career"}'),
            ("p002.json", b'{"concept": "chef"}'),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = decode(IngestConfig(kind="webdataset", path=str(tmp_path)))
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[0]["caption"] == "a woman at a desk" and rows[0]["concept"] == "career"
    assert "has no image" in rows[1]["error"]

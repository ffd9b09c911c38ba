"""What ingest decodes: only the accepted formats, whatever a file is called; nothing over input.max_bytes,
refused before it is read; nothing over max_pixels, Pillow's own bomb check included, without switching that
check off for the rest of the process."""

import os
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from tests.conftest import REPO
from tests.helpers import png_bytes
from tests.hostile_inputs import EPS, png_header, save, tar_member

PILLOW_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's documented default: 89 478 485


def decode(config: IngestConfig) -> dict[str, dict]:
    rows = DecodeSeeds(config)(list_seeds(config, seeds_per_shard=100)).to_pylist()
    return {os.path.basename(r["source_member"] or r["source_uri"]): r for r in rows}


def test_importing_every_module_leaves_pillow_s_pixel_limit_as_pillow_sets_it():
    code = ("import importlib, pkgutil, schemas, stages, pipeline\n"
            "for package in (schemas, stages, pipeline):\n"
            "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
            "        if not module.name.endswith('__main__'):\n"
            "            importlib.import_module(module.name)\n"
            "from PIL import Image\n"
            "print(Image.MAX_IMAGE_PIXELS)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(PILLOW_DEFAULT_MAX_PIXELS) == "89478485"


def test_only_the_accepted_formats_are_decoded_whatever_the_file_is_called(tmp_path):
    picture = Image.new("RGB", (40, 40), (30, 140, 220))
    files = {
        "tiff.png": save(picture, "TIFF"), "gif.jpg": save(picture, "GIF"), "bmp.webp": save(picture, "BMP"),
        "webp.png": save(picture, "WEBP", lossless=True), "jpeg.tif": save(picture, "JPEG", quality=95),
        "eps.jpg": EPS, "ico.png": save(picture, "ICO"), "ppm.jpg": save(picture, "PPM"),
        "pcx.bmp": save(picture, "PCX"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    rows = decode(IngestConfig(path=str(tmp_path)))
    for name in ("tiff.png", "gif.jpg", "bmp.webp", "webp.png", "jpeg.tif"):
        assert rows[name]["status"] == "ok", (name, rows[name]["error"])
        pixel = np.frombuffer(rows[name]["image_rgb"], np.uint8)[:3]
        assert np.abs(pixel.astype(int) - (30, 140, 220)).max() <= 8, (name, pixel)  # GIF's palette, JPEG's loss
    for name, found in (("eps.jpg", "EPS"), ("ico.png", "ICO"), ("ppm.jpg", "PPM"), ("pcx.bmp", "PCX")):
        assert rows[name]["error"] == (f"ingest: image format {found} (by its first bytes) is not accepted; "
                                       "only JPEG, PNG, WEBP, BMP, GIF, TIFF are"), rows[name]["error"]


@pytest.mark.parametrize("warnings_are", ["default", "error"])
def test_pillow_s_bomb_check_is_an_error_row_whether_it_warns_or_raises(tmp_path, warnings_are):
    """10000 x 10000 is over Pillow's limit (a warning, or an exception where warnings are errors) and over
    max_pixels; 20000 x 20000 is over twice Pillow's limit (DecompressionBombError)."""
    (tmp_path / "big.png").write_bytes(png_header(10_000, 10_000))
    (tmp_path / "bomb.png").write_bytes(png_header(20_000, 20_000))
    with warnings.catch_warnings():
        warnings.simplefilter(warnings_are, Image.DecompressionBombWarning)
        rows = decode(IngestConfig(path=str(tmp_path)))
    big = rows["big.png"]["error"]
    if warnings_are == "error":
        assert big.startswith("ingest: image is over Pillow's decompression-bomb limit (DecompressionBombWarning: "
                              "Image size (100000000 pixels) exceeds limit of 89478485 pixels"), big
    else:
        assert big == "ingest: image is 10000x10000 = 100000000 pixels, over max_pixels=40000000"
    assert rows["bomb.png"]["error"].startswith(
        "ingest: image is over Pillow's decompression-bomb limit (DecompressionBombError: "
        "Image size (400000000 pixels) exceeds limit of 178956970 pixels")
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


def test_a_local_file_over_max_bytes_and_a_fifo_are_refused_unopened(tmp_path):
    small, large = png_bytes(32, 32), png_bytes(200, 200, (5, 6, 7))
    (tmp_path / "small.png").write_bytes(small)
    (tmp_path / "large.png").write_bytes(large)
    (tmp_path / "locked.png").write_bytes(large)
    os.chmod(tmp_path / "locked.png", 0)  # refused from its size: opening it would fail (for a non-root user)
    os.mkfifo(tmp_path / "pipe.png")
    limit = len(small) + 1
    rows = decode(IngestConfig(path=str(tmp_path), max_bytes=limit))
    assert rows["small.png"]["status"] == "ok"
    for name in ("large.png", "locked.png"):
        assert rows[name]["error"] == f"ingest: input is {len(large)} bytes, over input.max_bytes={limit}"
    assert rows["pipe.png"]["error"] == "ingest: not a regular file (a FIFO); nothing was read from it"


def test_a_tar_member_over_max_bytes_is_refused_from_its_header(tmp_path):
    small, large = png_bytes(32, 32), png_bytes(200, 200, (5, 6, 7))
    with tarfile.open(tmp_path / "seeds.tar", "w") as tar:
        tar_member(tar, "a.png", small)
        tar_member(tar, "b.png", large)
    config = IngestConfig(kind="webdataset", path=str(tmp_path / "seeds.tar"), max_bytes=len(small))
    refs = list_seeds(config, seeds_per_shard=10)
    # then cut the tar inside b.png's bytes: a read would find it cut short; the header's size alone refuses it
    data = (tmp_path / "seeds.tar").read_bytes()
    (tmp_path / "seeds.tar").write_bytes(data[: data.index(large) + 100])
    a, b = DecodeSeeds(config)(refs).to_pylist()
    assert a["status"] == "ok"
    assert b["error"] == f"ingest: tar member b.png is {len(large)} bytes, over input.max_bytes={len(small)}"


def test_symlinks_and_duplicates_in_a_tar_are_rows_not_silence(tmp_path):
    with tarfile.open(tmp_path / "seeds.tar", "w") as tar:
        tar_member(tar, "s/a.jpg", save(Image.new("RGB", (32, 32)), "JPEG"))
        tar_member(tar, "s/a.jpg", b"second")
        tar_member(tar, "s/b.jpg", type=tarfile.SYMTYPE, linkname="../../etc/passwd")
        tar_member(tar, "s/c.png", type=tarfile.LNKTYPE, linkname="s/a.jpg")
        tar_member(tar, "s/notes", type=tarfile.SYMTYPE, linkname="/etc/shadow")  # no sample: still a row
        tar_member(tar, "s", type=tarfile.DIRTYPE)  # a plain folder entry: not a seed, no row
    refs = list_seeds(IngestConfig(kind="webdataset", path=str(tmp_path / "seeds.tar")), 10).to_pylist()
    assert [(r["source_member"], r["source_error"]) for r in refs] == [
        ("s/a.jpg", None),
        ("s/a.jpg", "tar member s/a.jpg appears twice in this tar; the first is read"),
        ("s/b.jpg", "tar member s/b.jpg is a symlink (to ../../etc/passwd); links are not followed"),
        ("s/c.png", "tar member s/c.png is a hard link (to s/a.jpg); links are not followed"),
        ("s/notes", "tar member s/notes is a symlink (to /etc/shadow); links are not followed"),
    ]
    assert refs[0]["source_offset"] == 512 and refs[0]["source_size"] == len(save(Image.new("RGB", (32, 32)), "JPEG"))

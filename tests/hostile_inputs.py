"""Hostile seed inputs, bad in the ways collections from the wild (or an attacker) are, and what each must be
reported as, written out by hand: the folder corpus, a WebDataset tar, and a parquet list on a bucket."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import png_bytes

OK = None  # expected reason of an input that becomes a seed

# write_hostile_folder's entries and the reason each must give (OK: a seed), with min_side=8 and max_pixels at
# most 500*500; max_bytes at its default, 50_000_000.
HOSTILE_FOLDER = {
    "zero.jpg": "empty file",
    "truncated.jpg": "image data is corrupt",
    "alpha.png": OK,
    "palette.png": OK,
    "cmyk.jpg": OK,
    "sixteen.png": OK,
    "gray.png": OK,
    "one_pixel.png": "smaller than min_side",
    "bomb.png": "over max_pixels",  # 800 x 800, really
    "text.jpg": "not a decodable image",
    "copy_a.png": OK,
    "copy_b.png": OK,  # the same bytes as copy_a.png: a duplicate once claims are made (run)
    "x" * 240 + ".png": OK,
    "latin1-\\xe9t\\xe9.png": OK,  # its name's bytes are not UTF-8
    "folder.jpg": "a folder, not an image file",
    "escape.png": "symlink points outside the input folder",
    "fifo.jpg": "not a regular file (a FIFO)",  # opened, it would block the worker for ever
    "fifo_link.png": "not a regular file (a FIFO)",  # a symlink inside the folder, to fifo.jpg
    "huge.jpg": "is 60000000 bytes, over input.max_bytes=50000000",  # sparse: no disk used
    "eps.jpg": "image format EPS (by its first bytes) is not accepted",  # would go to Ghostscript
    "icon.png": "image format ICO (by its first bytes) is not accepted",
    "header_bomb.png": "over Pillow's decompression-bomb limit",  # a header saying 20000 x 20000
    "header_big.png": "10000x10000 = 100000000 pixels, over max_pixels",  # over Pillow's limit, under twice it
    "webp.jpg": OK,  # WebP is accepted whatever the file is called
}

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto 32 32 lineto stroke\nshowpage\n%%EOF\n"


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``, with almost no pixel data: what a bomb's open sees."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def write_hostile_folder(base: Path) -> Path:
    """``base/seeds``: the entries of HOSTILE_FOLDER."""
    root = base / "seeds"
    root.mkdir()
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = save(noise, "JPEG")
    files = {
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "alpha.png": save(Image.new("RGBA", (40, 40), (10, 20, 30, 0)), "PNG"),
        "palette.png": save(Image.new("RGB", (40, 40), (200, 10, 10)).convert("P"), "PNG"),
        "cmyk.jpg": save(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"),
        "sixteen.png": save(Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)), "PNG"),
        "gray.png": save(Image.new("L", (40, 40), 90), "PNG"),
        "one_pixel.png": save(Image.new("RGB", (1, 1)), "PNG"),
        "bomb.png": png_bytes(800, 800),
        "text.jpg": b"just some text, not a JPEG",
        "copy_a.png": png_bytes(48, 48, (1, 2, 3)),
        "copy_b.png": png_bytes(48, 48, (1, 2, 3)),
        ("x" * 240) + ".png": png_bytes(32, 32, (4, 5, 6)),
        "eps.jpg": EPS,
        "icon.png": save(Image.new("RGB", (32, 32), (30, 60, 90)), "ICO"),
        "header_bomb.png": png_header(20000, 20000),
        "header_big.png": png_header(10000, 10000),
        "webp.jpg": save(Image.new("RGB", (40, 40), (60, 90, 30)), "WEBP"),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9t\xe9.png"), "wb") as handle:
        handle.write(png_bytes(32, 32, (7, 8, 9)))
    (root / "folder.jpg").mkdir()
    outside = base / "secret.png"
    outside.write_bytes(png_bytes(32, 32))
    (root / "escape.png").symlink_to(outside)
    os.mkfifo(root / "fifo.jpg")
    (root / "fifo_link.png").symlink_to(root / "fifo.jpg")
    with open(root / "huge.jpg", "wb") as handle:
        handle.truncate(60_000_000)
    names = [n.decode("utf-8", "backslashreplace") for n in os.listdir(os.fsencode(root))]
    assert sorted(names) == sorted(HOSTILE_FOLDER)
    return root


def tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def write_hostile_tar(path: Path) -> list[tuple[str, str | None]]:
    """A tar whose entries are all accounted for; returns (source_member, expected reason) in listing order,
    for max_bytes=20_000 and min_side=8."""
    good = save(Image.new("RGB", (40, 40), (20, 120, 40)), "JPEG")
    large = save(Image.fromarray(np.random.default_rng(2).integers(0, 255, (96, 96, 3), dtype=np.uint8)), "PNG")
    assert len(large) > 20_000
    with tarfile.open(path, "w") as tar:
        tar_member(tar, "a001.jpg", good)
        tar_member(tar, "a001.txt", b"a man at a desk")
        tar_member(tar, "a002.txt", b"a caption whose image is missing")
        tar_member(tar, "a003.jpg", b"garbage bytes")
        tar_member(tar, "a001.jpg", save(Image.new("RGB", (40, 40), (200, 0, 0)), "JPEG"))  # the same name again
        tar_member(tar, "a001.png", png_bytes(40, 40))  # a second image of sample a001
        tar_member(tar, "a004.jpg", type=tarfile.SYMTYPE, linkname="/etc/hostname")
        tar_member(tar, "a005.jpg", type=tarfile.LNKTYPE, linkname="a001.jpg")
        tar_member(tar, "a006.jpg", type=tarfile.FIFOTYPE)
        tar_member(tar, "a007.jpg", large)
        tar_member(tar, "a008.eps.jpg", EPS)  # key a008, extension eps.jpg: not an image field; no image
        tar_member(tar, "a009.jpg", EPS)
        tar_member(tar, "a010.webp", save(Image.new("RGB", (40, 40), (1, 90, 200)), "WEBP"))
    return [
        ("a001.jpg", OK),
        ("a002.<no image>", "webdataset sample has no image file"),
        ("a003.jpg", "not a decodable image"),
        ("a001.jpg", "tar member a001.jpg appears twice in this tar; the first is read"),
        ("a001.png", "tar member a001.png is a second image of sample a001 (the first, a001.jpg, is read)"),
        ("a004.jpg", "tar member a004.jpg is a symlink (to /etc/hostname); links are not followed"),
        ("a005.jpg", "tar member a005.jpg is a hard link (to a001.jpg); links are not followed"),
        ("a006.jpg", "tar member a006.jpg is not a regular file (a device or a FIFO)"),
        ("a007.jpg", f"tar member a007.jpg is {len(large)} bytes, over input.max_bytes=20000"),
        ("a008.<no image>", "webdataset sample has no image file"),
        ("a009.jpg", "image format EPS (by its first bytes) is not accepted"),
        ("a010.webp", OK),
    ]

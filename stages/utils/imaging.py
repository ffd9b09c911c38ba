"""Image helpers shared by stages: raw RGB <-> PIL, safe decoding and normalisation, JPEG encoding."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from stages.utils.errors import InputError, describe_error

# What a seed may be decoded as, whatever its file is called (Pillow's format names). Pillow's own
# decompression-bomb limit (Image.MAX_IMAGE_PIXELS) stays as Pillow sets it, for every reader in the process.
SEED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


class SeedImageError(InputError):
    """An input that cannot become a seed image; the message is the manifest's reason."""


def to_raw(image: Image.Image) -> tuple[bytes, int, int]:
    rgb = image.convert("RGB")
    return rgb.tobytes(), rgb.width, rgb.height


def from_raw(data: bytes, width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (int(width), int(height)), data)


def encode_jpeg(image: Image.Image, quality: int, **options) -> bytes:
    """Baseline JPEG; ``options`` go to Pillow (exif=, xmp=, subsampling=)."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality, optimize=False, progressive=False, **options)
    return out.getvalue()


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (palette, alpha, CMYK, 16-bit, grayscale) to 8-bit RGB; transparency over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def _sniffed_format(data: bytes) -> str | None:
    """The format Pillow would take ``data`` for, from the plugins' prefix checks only (nothing is parsed)."""
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:
            continue
    return None


def _open(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    """Pillow's bomb check runs in open: over its limit it warns (an exception where warnings are errors), over
    twice that it raises; either is an error row here. The caller's max_pixels (at most Pillow's limit) then
    refuses what only warned."""
    try:
        return Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SeedImageError(f"image is over Pillow's decompression-bomb limit ({describe_error(exc)})") from None
    except Exception as exc:  # PIL raises several types for junk input
        found = _sniffed_format(data)
        if found is not None and found not in formats:
            raise SeedImageError(f"image format {found} (by its first bytes) is not accepted; only "
                                 f"{', '.join(formats)} are") from None
        raise SeedImageError(f"not a decodable image ({describe_error(exc)})") from None


def decode_seed_image(data: bytes, *, max_pixels: int, min_side: int, max_side: int,
                      formats: tuple[str, ...] = SEED_FORMATS) -> Image.Image:
    """Decode and normalise one seed: EXIF orientation applied, 8-bit RGB, longer side <= max_side. Only
    ``formats`` are decoded, and nothing over ``max_pixels`` (checked from the header, before decoding)."""
    if not data:
        raise SeedImageError("empty file")
    image = _open(data, formats)
    width, height = image.size
    if width * height > max_pixels:
        raise SeedImageError(f"image is {width}x{height} = {width * height} pixels, over max_pixels={max_pixels}")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        image = _flatten_to_rgb(image)
    except Exception as exc:
        raise SeedImageError(f"image data is corrupt ({describe_error(exc)})") from None
    if min(image.size) < min_side:
        raise SeedImageError(f"image is {image.width}x{image.height}, smaller than min_side={min_side}")
    longer = max(image.size)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def square_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Scale the shorter side to ``resolution`` and centre-crop a square: the editors' input shape."""
    return ImageOps.fit(image, (resolution, resolution), Image.Resampling.LANCZOS, centering=(0.5, 0.5))

"""Model-free drift measures of one member against its seed: skin colour and the scene outside the person.

Editors asked to change one attribute also change others they were not asked to: open editors lighten skin in
most edits (Seo et al., 2026), and many repaint the background. These measures need no model, only the region
masks the caller found (stages/models/drift_checks.py), so they are exact, cheap and reproducible.

Skin colour is CIELAB lightness L* *and* hue angle h*, not a single light-dark scale (Thong, Joniak & Xiang,
"Beyond Skin Tone", ICCV 2023): a redder or yellower skin at the same lightness is drift too. The change outside
the person is the mean absolute pixel difference and the structural similarity (Wang et al., 2004) of the luma
images, both over the pixels outside the seed's person mask; the SSIM windows see only those pixels, so the
person's own (wanted) change does not count as a change of the scene around them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# sRGB (IEC 61966-2-1) linear RGB -> CIE XYZ, D65, as tabulated by B. Lindbloom to 7 digits.
_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
# The D65 white point in the same units: the matrix's row sums, so that sRGB white maps to a* = b* = 0 exactly
# (0.95047, 1.0, 1.08883, the usual tabulated D65 white).
_WHITE = _RGB_TO_XYZ.sum(axis=1)
_EPSILON = (6 / 29) ** 3  # CIE 1976: below this t, f(t) is the linear segment (216/24389)
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601

# SSIM as Wang et al. (2004): Gaussian window sigma 1.5, 11 x 11, K1 = 0.01, K2 = 0.03, dynamic range 255.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


def _rgb_array(image: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must be a uint8 H x W x 3 RGB array, got {array.dtype} {array.shape}")
    return array


def _mask_array(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(mask, dtype=bool)
    if array.shape != tuple(shape[:2]):
        raise ValueError(f"{name} is {array.shape}, not the image's {tuple(shape[:2])}")
    return array


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 sRGB -> float64 H x W x 3 CIELAB (L*, a*, b*), D65 white.

    Standard sRGB companding undone (linear segment below 0.04045), then CIE 1976 L*a*b* with f()'s linear
    segment near black, so dark skin is measured on the same scale as light skin."""
    c = _rgb_array(rgb, "rgb").astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (linear @ _RGB_TO_XYZ.T) / _WHITE
    f = np.where(t > _EPSILON, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def _angle(a: float, b: float) -> float:
    """atan2(b, a) in degrees in [0, 360) (a tiny negative angle must not round up to 360)."""
    hue = float(np.degrees(np.arctan2(b, a))) % 360.0
    return 0.0 if hue >= 360.0 else hue


@dataclass
class SkinColour:
    lightness: float  # median L* over the region (robust to highlights and shadows)
    hue: float  # degrees in [0, 360): angle of the mean (a*, b*) vector, so wrap-around does not bias it
    chroma: float  # mean sqrt(a*^2 + b*^2): how far from grey; a hue of a near-grey region says little
    pixels: int


def skin_colour(image: np.ndarray, region: np.ndarray, min_pixels: int = 16) -> SkinColour | None:
    """The colour of ``image`` over the True pixels of ``region``; None below ``min_pixels`` (too few to say).

    Lightness is the median, hue the circular mean: the mean of the (a*, b*) vectors, whose angle is right
    where the hue angles straddle 0/360 and their plain mean would be the opposite colour."""
    image = _rgb_array(image, "image")
    region = _mask_array(region, image.shape, "region")
    pixels = int(region.sum())
    if pixels < max(1, min_pixels):
        return None
    lab = srgb_to_lab(image[region][None])[0]  # the region's pixels only: N x 3
    a, b = lab[:, 1], lab[:, 2]
    return SkinColour(lightness=float(np.median(lab[:, 0])), hue=_angle(float(a.mean()), float(b.mean())),
                      chroma=float(np.hypot(a, b).mean()), pixels=pixels)


def hue_difference(a: float, b: float) -> float:
    """Signed smallest angle from hue ``a`` to hue ``b`` in degrees, in (-180, 180]: 350 -> 10 is +20."""
    d = (float(b) - float(a)) % 360.0
    return d - 360.0 if d > 180.0 else d


def luma(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B), float64 H x W in 0..255: the grey image SSIM sees."""
    return _rgb_array(image, "image").astype(np.float64) @ _LUMA


def _gaussian_kernel(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _filter_axis(image: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """1-D convolution along ``axis``, edges mirrored (the edge pixel repeated: scipy's and skimage's
    "reflect"), output the input's size. A weighted sum of shifted views: vectorised, no Python per pixel."""
    radius = len(kernel) // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="symmetric")
    n = image.shape[axis]
    out = np.zeros(image.shape, dtype=np.float64)
    index = [slice(None)] * image.ndim
    for i, weight in enumerate(kernel):
        index[axis] = slice(i, i + n)
        out += weight * padded[tuple(index)]
    return out


def gaussian_filter(image: np.ndarray, sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float image (rows, then columns), the SSIM window's local means."""
    kernel = _gaussian_kernel(sigma, radius)
    return _filter_axis(_filter_axis(np.asarray(image, dtype=np.float64), kernel, 0), kernel, 1)


def ssim_map(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel SSIM (Wang et al., 2004) of two 2-D grey images in 0..255, each in [-1, 1], 1 where identical.

    Local statistics are Gaussian-weighted (population, not sample, covariance), as the paper's reference.
    ``weight`` (0/1, H x W) restricts every window to the pixels it marks: the local means and (co)variances
    are normalised Gaussian averages over those pixels only, so what changed where it is 0 (the person, whom
    the edit may change) cannot lower the similarity of the pixels around it. Without it, plain SSIM."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim_map needs two 2-D images of one shape, got {x.shape} and {y.shape}")
    w = np.ones(x.shape) if weight is None else np.asarray(weight, dtype=np.float64)
    norm = gaussian_filter(w)
    norm = np.where(norm > 0, norm, 1.0)  # pixels no marked pixel reaches: their statistics are 0, unused

    def mean(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v * w) / norm

    mu_x, mu_y = mean(x), mean(y)
    var_x = mean(x * x) - mu_x * mu_x
    var_y = mean(y * y) - mu_y * mu_y
    cov = mean(x * y) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + SSIM_C1) * (2.0 * cov + SSIM_C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return numerator / denominator


@dataclass
class OutsideChange:
    mean_abs: float  # mean absolute pixel difference, 0-255, over the pixels outside the person mask and all channels
    ssim: float  # structural similarity of the grey images restricted to outside the mask
    pixels: int  # how many pixels lie outside the person


def outside_change(seed: np.ndarray, member: np.ndarray, person: np.ndarray) -> OutsideChange | None:
    """How much ``member`` changed the scene outside the seed's ``person`` mask; None when nothing is outside.

    Both images must share one frame (same shape): a pixel difference of unaligned images measures the
    misalignment, not the edit. The SSIM windows see the outside pixels only (``ssim_map``'s weight), and
    their map is averaged over the outside pixels: a member that changed only the person scores exactly 1."""
    seed = _rgb_array(seed, "seed")
    member = _rgb_array(member, "member")
    if seed.shape != member.shape:
        raise ValueError(f"seed {seed.shape} and member {member.shape} are not one frame: align them first")
    outside = ~_mask_array(person, seed.shape, "person")
    pixels = int(outside.sum())
    if pixels == 0:
        return None
    # Integer sum of integer differences: a +10 shift gives exactly 10.0.
    diff = np.abs(seed.astype(np.int16) - member.astype(np.int16))[outside]
    mean_abs = int(diff.sum(dtype=np.int64)) / (pixels * 3)
    ssim = float(ssim_map(luma(seed), luma(member), outside)[outside].mean())
    return OutsideChange(mean_abs=float(mean_abs), ssim=ssim, pixels=pixels)


DRIFT_KEYS = ("skin_l_seed", "skin_l", "skin_hue_seed", "skin_hue", "delta_l", "delta_hue", "outside_mad",
              "outside_ssim")


MIN_HUE_CHROMA = 5.0  # CIELAB chroma under which a skin region's hue angle is not compared


@dataclass
class DriftMeasure:
    """One member's drift: each part None where its region was missing or too small to measure."""

    skin_seed: SkinColour | None
    skin_member: SkinColour | None
    outside: OutsideChange | None

    def scores(self) -> dict[str, float | None]:
        """The flat record fields (schemas.records.DRIFT_SCORES); a delta needs both skin colours."""
        s, m, o = self.skin_seed, self.skin_member, self.outside
        both = s is not None and m is not None
        return {
            "skin_l_seed": None if s is None else s.lightness,
            "skin_l": None if m is None else m.lightness,
            "skin_hue_seed": None if s is None else s.hue,
            "skin_hue": None if m is None else m.hue,
            "delta_l": m.lightness - s.lightness if both else None,
            # a hue angle near the grey axis is noise (two levels of tint move it 100+ degrees): not compared
            "delta_hue": hue_difference(s.hue, m.hue) if both and min(s.chroma, m.chroma) >= MIN_HUE_CHROMA else None,
            "outside_mad": None if o is None else o.mean_abs,
            "outside_ssim": None if o is None else o.ssim,
        }


def measure_drift(seed: np.ndarray, member: np.ndarray, skin_seed: np.ndarray | None,
                  skin_member: np.ndarray | None, person: np.ndarray | None) -> dict[str, float | None]:
    """The drift scores of ``member`` against ``seed`` (keys DRIFT_KEYS, floats or None).

    ``skin_seed`` and ``skin_member`` are each image's own skin mask (the edit may move the face), ``person``
    the seed's person mask; a mask that is None, or too small, leaves its keys None."""
    measure = DriftMeasure(
        skin_seed=None if skin_seed is None else skin_colour(seed, skin_seed),
        skin_member=None if skin_member is None else skin_colour(member, skin_member),
        outside=None if person is None else outside_change(seed, member, person),
    )
    return measure.scores()

"""The model-free drift measures (stages/models/drift.py) on images of known colours in known regions.

Expected values come from outside the code under test: CIELAB values of the sRGB primaries as published by
B. Lindbloom (brucelindbloom.com, D65, 4 decimals), or arithmetic done here in scalar form from the CIE 1976
and IEC 61966-2-1 definitions (``lab_by_hand``, itself checked against the published values first).
The hand reference uses the tabulated D65 white (0.95047, 1.0, 1.08883); the code uses the matrix's row sums
(Y: 1.0000001), which differ by 4e-6 L* at most, hence a tolerance of 1e-4 on colours.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.records import DRIFT_SCORES
from stages.models.drift import (
    gaussian_filter, hue_difference, luma, measure_drift, outside_change, skin_colour, srgb_to_lab, ssim_map,
)

# sRGB -> CIELAB (D65), Lindbloom's calculator / tables.
PUBLISHED = {
    (255, 255, 255): (100.0, 0.0, 0.0),
    (0, 0, 0): (0.0, 0.0, 0.0),
    (255, 0, 0): (53.2408, 80.0925, 67.2032),
    (0, 255, 0): (87.7347, -86.1827, 83.1793),
    (0, 0, 255): (32.2970, 79.1875, -107.8602),
}
LIGHT_SKIN = (224, 172, 138)
DARK_SKIN = (110, 72, 52)
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # Wang et al. 2004: K1 = 0.01, K2 = 0.03, L = 255


def lab_by_hand(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """One colour, scalar, in the CIE's kappa / epsilon form (L* = kappa Y below epsilon) rather than f()'s."""
    def linear(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(v) for v in rgb)
    x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b
    epsilon, kappa = 216 / 24389, 24389 / 27

    def f(t: float) -> float:
        return t ** (1 / 3) if t > epsilon else (kappa * t + 16) / 116

    fx, fy, fz = f(x / 0.95047), f(y / 1.0), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def hue_by_hand(a: float, b: float) -> float:
    return math.degrees(math.atan2(b, a)) % 360


def solid(colour, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def textured(seed: int = 0, size: int = 32, low: int = 20, high: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (size, size, 3), dtype=np.uint8)


def square(size: int = 32, lo: int = 8, hi: int = 24) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


@pytest.mark.parametrize("rgb,lab", list(PUBLISHED.items()))
def test_srgb_to_lab_matches_published_values(rgb, lab):
    assert srgb_to_lab(np.array([[rgb]], dtype=np.uint8))[0, 0] == pytest.approx(lab, abs=1e-3)


def test_mid_grey_is_lightness_50_and_near_black_is_on_the_linear_segment():
    grey = srgb_to_lab(solid((119, 119, 119), 2))
    assert grey[..., 0] == pytest.approx(50.03, abs=0.01)  # sRGB 119 is the usual L* = 50 grey
    assert np.abs(grey[..., 1:]).max() < 1e-9
    # sRGB 1: linear 1 / 255 / 12.92 = 3.0353e-4 = Y, below epsilon, so L* = kappa Y = 24389 / 27 * Y.
    near_black = srgb_to_lab(solid((1, 1, 1), 2))[0, 0, 0]
    assert near_black == pytest.approx(24389 / 27 * (1 / 255 / 12.92), rel=1e-9)


def test_the_hand_reference_agrees_with_the_published_values():
    for rgb, lab in PUBLISHED.items():
        assert lab_by_hand(rgb) == pytest.approx(lab, abs=1e-3)


def test_skin_colour_of_each_half_of_an_image():
    image = solid(LIGHT_SKIN)
    image[:, 16:] = DARK_SKIN
    left = np.zeros((32, 32), dtype=bool)
    left[:, :16] = True
    for region, rgb in ((left, LIGHT_SKIN), (~left, DARK_SKIN)):
        lightness, a, b = lab_by_hand(rgb)
        found = skin_colour(image, region)
        assert found.pixels == 512
        assert found.lightness == pytest.approx(lightness, abs=1e-4)
        assert found.hue == pytest.approx(hue_by_hand(a, b), abs=1e-4)
        assert found.chroma == pytest.approx(math.hypot(a, b), abs=1e-4)
    assert skin_colour(image, left).lightness > skin_colour(image, ~left).lightness + 30


def test_lightness_is_the_median_so_a_highlight_does_not_move_it():
    image = solid(DARK_SKIN)
    image[:8] = (255, 255, 255)  # a quarter of the region is specular highlight
    assert skin_colour(image, np.ones((32, 32), dtype=bool)).lightness == pytest.approx(lab_by_hand(DARK_SKIN)[0],
                                                                                       abs=1e-4)


def test_hue_is_the_angle_of_the_mean_vector_across_the_wrap():
    image = solid((255, 0, 0))  # hue 40.0 degrees
    image[:, 16:] = (0, 0, 255)  # hue 306.3 degrees: a plain mean of the angles would say 173
    (_, ra, rb), (_, ba, bb) = PUBLISHED[(255, 0, 0)], PUBLISHED[(0, 0, 255)]
    expected = hue_by_hand((ra + ba) / 2, (rb + bb) / 2)  # about 345.7
    assert skin_colour(image, np.ones((32, 32), dtype=bool)).hue == pytest.approx(expected, abs=1e-3)


def test_too_few_pixels_say_nothing():
    image = solid(LIGHT_SKIN)
    region = np.zeros((32, 32), dtype=bool)
    assert skin_colour(image, region) is None
    region.flat[:15] = True
    assert skin_colour(image, region) is None
    region.flat[15] = True
    assert skin_colour(image, region).pixels == 16
    assert skin_colour(image, region, min_pixels=17) is None
    with pytest.raises(ValueError):
        skin_colour(image, np.ones((16, 16), dtype=bool))


@pytest.mark.parametrize("a,b,expected", [
    (350, 10, 20), (10, 350, -20), (0, 180, 180), (180, 0, 180), (90, 90, 0), (359.5, 0.5, 1.0), (30, 200, 170),
    (200, 30, -170), (0, 359, -1),
])
def test_hue_difference_is_signed_and_smallest(a, b, expected):
    assert hue_difference(a, b) == pytest.approx(expected, abs=1e-9)


def test_a_lightened_skin_patch_is_measured_and_nothing_outside_changed():
    seed = textured()
    seed[8:24, 8:24] = DARK_SKIN
    member = seed.copy()
    lighter = tuple(v + 30 for v in DARK_SKIN)
    member[8:24, 8:24] = lighter
    skin = person = square()
    values = measure_drift(seed, member, skin, skin, person)
    assert list(values) == ["skin_l_seed", "skin_l", "skin_hue_seed", "skin_hue", "delta_l", "delta_hue",
                            "outside_mad", "outside_ssim"]
    assert tuple(values) == DRIFT_SCORES
    (l0, a0, b0), (l1, a1, b1) = lab_by_hand(DARK_SKIN), lab_by_hand(lighter)
    assert values["skin_l_seed"] == pytest.approx(l0, abs=1e-4)
    assert values["skin_l"] == pytest.approx(l1, abs=1e-4)
    assert values["delta_l"] == pytest.approx(l1 - l0, abs=1e-4)
    assert values["delta_hue"] == pytest.approx(hue_by_hand(a1, b1) - hue_by_hand(a0, b0), abs=1e-4)
    assert values["outside_mad"] == 0
    assert values["outside_ssim"] == 1.0
    assert all(isinstance(v, float) for v in values.values())


def test_a_background_shifted_by_ten_is_a_mean_absolute_difference_of_exactly_ten():
    seed = textured(1)  # channels in 20..199, so +10 does not clip
    person = square()
    member = seed.copy()
    member[~person] += 10
    found = outside_change(seed, member, person)
    assert found.mean_abs == 10.0
    assert found.pixels == 32 * 32 - 16 * 16
    assert found.ssim < 1.0


def test_ssim_of_uniform_images_is_the_luminance_term_by_hand():
    # Constant images: no variance, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) everywhere.
    found = outside_change(solid((100, 100, 100)), solid((110, 110, 110)), np.zeros((32, 32), dtype=bool))
    assert found.ssim == pytest.approx((2 * 100 * 110 + C1) / (100 ** 2 + 110 ** 2 + C1), rel=1e-9)
    assert found.mean_abs == 10.0


def test_ssim_falls_with_noise_and_goes_negative_for_an_inverted_image():
    seed = textured(2, size=48, low=0, high=256)
    nothing = np.zeros((48, 48), dtype=bool)
    noise = np.random.default_rng(3).normal(0, 25, seed.shape)
    noisy = np.clip(seed + noise, 0, 255).astype(np.uint8)
    same, noised, inverted = (outside_change(seed, m, nothing).ssim for m in (seed, noisy, 255 - seed))
    assert same == 1.0
    assert -1.0 <= noised < 1.0
    assert -1.0 <= inverted < 0.0


def test_missing_regions_leave_their_keys_none():
    seed = solid(LIGHT_SKIN)
    assert outside_change(seed, seed, np.ones((32, 32), dtype=bool)) is None
    everything = np.ones((32, 32), dtype=bool)
    values = measure_drift(seed, seed, everything, None, None)
    assert values["skin_l_seed"] == pytest.approx(lab_by_hand(LIGHT_SKIN)[0], abs=1e-4)
    assert [k for k, v in values.items() if v is None] == ["skin_l", "skin_hue", "delta_l", "delta_hue",
                                                           "outside_mad", "outside_ssim"]
    values = measure_drift(seed, seed, np.zeros((32, 32), dtype=bool), everything, everything)
    assert [k for k, v in values.items() if v is None] == ["skin_l_seed", "skin_hue_seed", "delta_l", "delta_hue",
                                                           "outside_mad", "outside_ssim"]


def test_images_of_two_frames_are_refused():
    with pytest.raises(ValueError, match="not one frame"):
        outside_change(solid(LIGHT_SKIN, 32), solid(LIGHT_SKIN, 16), np.zeros((32, 32), dtype=bool))


def test_the_gaussian_window_is_sigma_1_5_over_11_by_11():
    impulse = np.zeros((21, 21))
    impulse[10, 10] = 1.0
    weights = [math.exp(-(i * i) / (2 * 1.5 ** 2)) for i in range(-5, 6)]
    weights = np.array(weights) / sum(weights)
    response = gaussian_filter(impulse)
    assert response[5:16, 5:16] == pytest.approx(np.outer(weights, weights), abs=1e-15)
    assert response.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(response[:5]).max() == 0 and np.abs(response[:, 16:]).max() == 0
    assert gaussian_filter(np.full((7, 9), 42.0)) == pytest.approx(np.full((7, 9), 42.0), rel=1e-12)


def test_the_blur_matches_scipy_reflect_mode_at_the_edges():
    ndimage = pytest.importorskip("scipy.ndimage")
    image = np.random.default_rng(4).random((13, 17)) * 255
    expected = ndimage.gaussian_filter(image, sigma=1.5, mode="reflect", truncate=3.5)  # radius 5
    assert gaussian_filter(image) == pytest.approx(expected, abs=1e-9)


def test_a_change_inside_the_person_does_not_reach_the_windows_around_it():
    seed = textured(5)
    member = seed.copy()
    member[8:24, 8:24] = 255 - member[8:24, 8:24]
    person = square()
    # Plain SSIM windows straddling the edge see the repainted person and fall below 1 just outside it ...
    assert ssim_map(luma(seed), luma(member))[~person].min() < 0.99
    # ... the outside measure's windows see only the outside, which is unchanged.
    assert outside_change(seed, member, person).ssim == 1.0


def test_ssim_with_nothing_masked_matches_the_formula_on_scipys_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    x, y = (luma(textured(s, size=40, low=0, high=256)) for s in (6, 7))
    y = 0.5 * x + 0.5 * y  # related, so the structure term is far from 0

    def blur(v):
        return ndimage.gaussian_filter(v, sigma=1.5, mode="reflect", truncate=3.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    expected = (2 * mx * my + C1) * (2 * cxy + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    assert ssim_map(x, y) == pytest.approx(expected, abs=1e-9)
    assert ssim_map(x, y, np.ones(x.shape)) == pytest.approx(expected, abs=1e-9)

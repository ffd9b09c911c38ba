"""The photo editing backends besides InstructPix2Pix: img2img (SDEdit), masked inpainting, FLUX.1 Kontext."""

import numpy as np
import pytest

from schemas.records import SEED, rows_to_table
from stages.edit.config import EditConfig
from stages.models.segmenter import MaskConfig
from stages.edit.img2img import Img2ImgEditor
from stages.edit.inpaint import InpaintEditor
from stages.edit.flux_kontext import FluxKontextEditor
from stages.models.segmenter import RegionSegmenter, blend, region_mask
from stages.utils.imaging import square_crop
from stages.sets.stage import PlanConfig, SetPlanner
from tests.helpers import noise_image, seed_row

SIDE = 32


def planned(taxonomy, rows, candidates=2, axes=("gender",)):
    return SetPlanner(PlanConfig(axes=list(axes), candidates_per_set=candidates), taxonomy, run_seed=3)(
        rows_to_table(rows, SEED)
    )


def pixels(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, np.uint8).reshape(SIDE, SIDE, 3).astype(np.int16)


def source_pixels(image) -> np.ndarray:
    return np.asarray(square_crop(image, SIDE)).astype(np.int16)


def mean_change(row, image) -> float:
    source = source_pixels(image)
    return float(np.mean([np.abs(pixels(c["image_rgb"]) - source).mean() for c in row["candidates"]]))


def test_img2img_changes_the_seed_more_at_higher_strength(tiny, taxonomy):
    image = noise_image(3)
    changes = []
    for strength in (0.25, 1.0):
        editor = Img2ImgEditor(EditConfig(backend="img2img", model=tiny["stable-diffusion"], steps=8,
                                          strength=strength, resolution=SIDE, dtype="float32"))
        editor.start()
        (row,) = editor(planned(taxonomy, [seed_row(image)])).to_pylist()
        assert {(c["member_id"], c["candidate"]) for c in row["candidates"]} == {
            (m, c) for m in ("male", "female") for c in (0, 1)}
        changes.append(mean_change(row, image))
    assert 0 < changes[0] < changes[1]


@pytest.fixture(scope="module")
def segmenter(tiny):
    segmenter = RegionSegmenter(MaskConfig(model=tiny["clipseg"]), "cpu")
    segmenter.setup()
    return segmenter


def inpaint_editor(tiny, threshold: float, **mask):
    editor = InpaintEditor(EditConfig(
        backend="inpaint", model=tiny["stable-diffusion-inpaint"], steps=3, strength=1.0, resolution=SIDE,
        dtype="float32", mask=MaskConfig(model=tiny["clipseg"], threshold=threshold, **mask),
    ))
    editor.start()
    return editor


def test_inpainting_leaves_every_pixel_outside_the_mask_unchanged(tiny, taxonomy, segmenter):
    image = noise_image(11)
    source = square_crop(image, SIDE)
    # The tiny segmenter is random and speckled: a threshold at its 97th percentile, grown by one pixel,
    # leaves a region of scattered blobs with plenty of untouched pixels around them.
    threshold = float(np.percentile(segmenter.probabilities(source, ["person"]), 97))
    editor = inpaint_editor(tiny, threshold, dilate=1, feather=0.5)
    region = editor.segmenter.mask(source, ["gender"])
    outside = region.soft == 0
    assert 0.1 < outside.mean() < 0.9
    (row,) = editor(planned(taxonomy, [seed_row(image)])).to_pylist()
    before = source_pixels(image)
    for cand in row["candidates"]:
        after = pixels(cand["image_rgb"])
        # Stated tolerance outside the feathered mask: 0 levels (the blend copies the seed's pixels).
        assert np.array_equal(after[outside], before[outside])
        inside = region.soft > 128
        assert inside.any() and np.abs(after[inside] - before[inside]).mean() > 1


def test_no_region_found_is_an_error_set_with_the_reason(tiny, taxonomy):
    editor = inpaint_editor(tiny, threshold=0.999999)
    (row,) = editor(planned(taxonomy, [seed_row(noise_image(12))])).to_pylist()
    assert row["set_status"] == "error"
    assert "no 'person' region found" in row["set_reason"] and "edit.mask.threshold" in row["set_reason"]


def test_region_prompts_follow_the_axis_attributes(segmenter):
    segmenter.config = MaskConfig(model="unused", prompt="person", prompts_by_attribute={"age": "face"})
    assert segmenter.prompts_for(["age"]) == ["face"]
    assert segmenter.prompts_for(["race", "gender"]) == ["person"]
    assert segmenter.prompts_for(["age", "gender"]) == ["face", "person"]


def test_region_mask_grows_and_feathers_the_thresholded_union():
    probs = np.zeros((2, 20, 20))
    probs[0, 5, 5] = 0.9
    probs[1, 14, 14] = 0.9
    region = region_mask(probs, threshold=0.5, dilate=2, feather=0)
    assert region.hard.sum() == 2 * 25 and region.hard[3:8, 3:8].all() and region.hard[12:17, 12:17].all()
    feathered = region_mask(probs, threshold=0.5, dilate=2, feather=1.5)
    assert (feathered.soft > 0).sum() > region.hard.sum() and feathered.soft.max() <= 255
    source, edited = np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 200, np.uint8)
    mixed = blend(source, edited, feathered.soft)
    assert (mixed[feathered.soft == 0] == 0).all() and (mixed[feathered.soft == 255] == 200).all()


def test_kontext_renders_each_member_at_the_seed_size_whatever_shares_the_batch(tiny, taxonomy):
    editor = FluxKontextEditor(EditConfig(backend="flux_kontext", model=tiny["flux-kontext"], steps=2,
                                          guidance_scale=2.5, resolution=SIDE, dtype="float32",
                                          max_sequence_length=32))
    editor.start()
    a, b = seed_row(noise_image(1), 0, seed_id="aaa"), seed_row(noise_image(2), 1, seed_id="bbb")
    together = editor(planned(taxonomy, [a, b])).to_pylist()
    (alone,) = editor(planned(taxonomy, [b])).to_pylist()
    assert all(c["error"] is None and len(c["image_rgb"]) == SIDE * SIDE * 3 for c in alone["candidates"])
    assert [c["image_rgb"] for c in together[1]["candidates"]] == [c["image_rgb"] for c in alone["candidates"]]
    by_candidate = {c["candidate"]: c["image_rgb"] for c in alone["candidates"] if c["member_id"] == "male"}
    assert by_candidate[0] != by_candidate[1]

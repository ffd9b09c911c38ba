"""The photo editing backends besides InstructPix2Pix: img2img (SDEdit), masked inpainting, FLUX.1 Kontext,
FLUX.2 klein, Qwen-Image-Edit; and edit.keep_background for a global editor."""

import numpy as np
import pytest

from schemas.records import SEED, rows_to_table
from stages.edit.config import EditConfig
from stages.models.segmenter import MaskConfig
from stages.edit.img2img import Img2ImgEditor
from stages.edit.inpaint import InpaintEditor
from stages.edit.flux_kontext import FluxKontextEditor
from stages.edit.flux2_klein import Flux2KleinEditor
from stages.edit.instruct_pix2pix import InstructPix2PixEditor
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


KLEIN_SIDE = 64  # the klein pipeline refuses a reference image under 64 px


def test_klein_renders_each_member_at_the_seed_size_whatever_shares_the_batch(tiny, taxonomy):
    def klein(max_batch: int) -> Flux2KleinEditor:
        editor = Flux2KleinEditor(EditConfig(backend="flux2_klein", model=tiny["flux2-klein"], steps=2,
                                             resolution=KLEIN_SIDE, max_batch=max_batch, dtype="float32"))
        editor.start()
        return editor

    editor = klein(max_batch=8)
    assert editor.config.guidance_scale == 1.0 and editor.denoiser_evals_per_step(editor.config) == 1  # distilled
    (plan_row,) = planned(taxonomy, [seed_row(noise_image(1))]).to_pylist()
    female = next(m for m in plan_row["members"] if m["member_id"] == "female")
    clause = "Keep the same face shape, clothing, pose and background."
    assert editor.prompt(female) == f"{female['instruction']} {clause}"  # on by default for klein
    ip2p = InstructPix2PixEditor(EditConfig(model="unused"))
    assert ip2p.prompt(female) == female["instruction"]  # off for InstructPix2Pix's 77-token prompt
    a, b = seed_row(noise_image(1), 0, seed_id="aaa"), seed_row(noise_image(2), 1, seed_id="bbb")
    together = editor(planned(taxonomy, [a, b])).to_pylist()
    (alone,) = editor(planned(taxonomy, [b])).to_pylist()
    assert all(c["error"] is None and len(c["image_rgb"]) == KLEIN_SIDE * KLEIN_SIDE * 3 for c in alone["candidates"])
    assert [c["image_rgb"] for c in together[1]["candidates"]] == [c["image_rgb"] for c in alone["candidates"]]
    by_candidate = {c["candidate"]: c["image_rgb"] for c in alone["candidates"] if c["member_id"] == "male"}
    assert by_candidate[0] != by_candidate[1]
    # One image a call instead of four: float32 CPU kernels round differently by batch size, so within one level
    # of 255 (measured: one value in 3,072 off by one), never a different image.
    (single,) = klein(max_batch=1)(planned(taxonomy, [b])).to_pylist()
    for one, four in zip(single["candidates"], alone["candidates"]):
        diff = np.abs(np.frombuffer(one["image_rgb"], np.uint8).astype(int) - np.frombuffer(four["image_rgb"], np.uint8))
        assert diff.max() <= 1


def keep_background_editor(tiny, threshold: float, feather: float = 0.5) -> InstructPix2PixEditor:
    editor = InstructPix2PixEditor(EditConfig(
        model=tiny["instruct-pix2pix"], steps=2, resolution=SIDE, dtype="float32", keep_background=True,
        mask=MaskConfig(model=tiny["clipseg"], threshold=threshold, dilate=1, feather=feather),
    ))
    editor.start()
    return editor


def test_keep_background_leaves_every_pixel_outside_the_mask_as_the_seeds_for_a_global_editor(tiny, taxonomy, segmenter):
    image = noise_image(13)
    source = square_crop(image, SIDE)
    threshold = float(np.percentile(segmenter.probabilities(source, ["person"]), 97))
    # The seed's person region: CLIPSeg thresholded and grown by one pixel, unfeathered so that every pixel is
    # either the seed's or the editor's (the feathered blend is region_mask's test above).
    region = region_mask(segmenter.probabilities(source, ["person"]), threshold, dilate=1, feather=0)
    outside, inside = region.soft == 0, region.soft == 255
    assert 0.1 < outside.mean() < 0.9 and inside.any()
    before = source_pixels(image)
    plain = InstructPix2PixEditor(EditConfig(model=tiny["instruct-pix2pix"], steps=2, resolution=SIDE, dtype="float32"))
    plain.start()
    (free,) = plain(planned(taxonomy, [seed_row(image)])).to_pylist()
    (kept,) = keep_background_editor(tiny, threshold, feather=0)(planned(taxonomy, [seed_row(image)])).to_pylist()
    for free_cand, cand in zip(free["candidates"], kept["candidates"]):
        edited, after = pixels(free_cand["image_rgb"]), pixels(cand["image_rgb"])
        assert np.abs(edited[outside] - before[outside]).mean() > 1  # the editor repainted the background...
        assert np.array_equal(after[outside], before[outside])  # ...and not one pixel of it is kept
        assert np.array_equal(after[inside], edited[inside])  # inside the mask: the editor's own pixels


def test_keep_background_without_a_person_region_is_an_error_set_with_the_reason(tiny, taxonomy):
    editor = keep_background_editor(tiny, threshold=0.999999)
    (row,) = editor(planned(taxonomy, [seed_row(noise_image(12))])).to_pylist()
    assert row["set_status"] == "error" and row["candidates"] is None
    assert "no 'person' region found" in row["set_reason"] and "edit.mask.threshold" in row["set_reason"]
    assert editor.counters["images_rendered"] == 0  # found before any GPU work


from schemas.records import SEED, rows_to_table
from stages.caption import CaptionConfig, Captioner, clean_caption
from tests.helpers import error_seed_row, seed_row, noise_image


def make(tiny, **overrides):
    captioner = Captioner(CaptionConfig(model=tiny["captioner"], dtype="float32", max_new_tokens=8, num_beams=1, **overrides))
    captioner.start()
    return captioner


def test_captions_seeds_without_one_and_keeps_given_captions(tiny):
    rows = [seed_row(noise_image(0), 0, caption=None), seed_row(noise_image(1), 1, caption="a chef"), error_seed_row(2)]
    out = make(tiny)(rows_to_table(rows, SEED)).to_pylist()
    assert isinstance(out[0]["caption"], str) and out[0]["caption"].strip()
    assert out[1]["caption"] == "a chef"
    assert out[2]["caption"] is None and out[2]["status"] == "error"


def test_overwrite_recaptions_and_is_deterministic(tiny):
    rows = [seed_row(noise_image(3), 0, caption="given")]
    first = make(tiny, overwrite=True)(rows_to_table(rows, SEED)).column("caption").to_pylist()
    second = make(tiny, overwrite=True)(rows_to_table(rows, SEED)).column("caption").to_pylist()
    assert first == second and first != ["given"]


def test_empty_batch_passes_through(tiny):
    empty = rows_to_table([], SEED)
    assert make(tiny)(empty).num_rows == 0


def test_clean_caption_strips_the_prompt_and_never_returns_empty():
    assert clean_caption("a photography of  a man ", "a photography of") == "a man"
    assert clean_caption("   ", None) == "a photo of a person"

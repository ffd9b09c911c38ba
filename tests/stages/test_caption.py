import pytest

from schemas.records import SEED, rows_to_table
from stages.caption import CaptionConfig, Captioner, check_caption, clean_caption
from stages.utils.errors import StageSetupError
from tests.helpers import error_seed_row, seed_row, noise_image


def make(tiny, **overrides):
    captioner = Captioner(CaptionConfig(model=tiny["captioner"], dtype="float32", max_new_tokens=8, num_beams=1, **overrides))
    captioner.start()
    return captioner


def test_captions_seeds_without_one_and_keeps_given_captions(tiny):
    rows = [seed_row(noise_image(0), 0, caption=None), seed_row(noise_image(1), 1, caption="a chef"), error_seed_row(2)]
    out = make(tiny)(rows_to_table(rows, SEED)).to_pylist()
    # the tiny random BLIP's greedy 8 tokens at its fixed weights (torch.manual_seed(0) when built): word salad
    # from its small vocabulary, not the fallback "a photo of a person" nor the prefix it is driven with
    assert out[0]["caption"] == "hammer kitchen the she in sitting office he" and out[0]["caption_note"] is None
    assert out[1]["caption"] == "a chef"
    assert out[2]["caption"] is None and out[2]["status"] == "error"


def test_a_blip_model_is_driven_the_prefix_way(tiny):
    assert make(tiny).chat is False  # auto: BLIP's processor has no chat template


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


def chat_captioner(tiny, **overrides):
    settings = dict(model=tiny["llava"], dtype="float32", max_new_tokens=12, num_beams=1, overwrite=True)
    settings.update(overrides)
    captioner = Captioner(CaptionConfig(**settings))
    captioner.start()
    return captioner


def test_a_chat_vlm_captions_through_its_chat_template_and_never_echoes_the_instruction(tiny):
    rows = [seed_row(noise_image(i), i, caption=None) for i in range(3)]
    captioner = chat_captioner(tiny, min_words=1)
    assert captioner.chat  # auto: the processor has a chat template
    prompt = captioner.chat_prompt()
    assert prompt.startswith("USER: <image>\n") and prompt.endswith("ASSISTANT:")
    one_by_one = [captioner(rows_to_table([row], SEED)).column("caption")[0].as_py() for row in rows]
    for caption in one_by_one:  # a decoder-only model's output starts with its prompt: only new tokens kept
        assert caption.strip() and "assistant" not in caption.lower() and "describe this image" not in caption.lower()
    batched = chat_captioner(tiny, min_words=1, batch_across_seeds=True)(rows_to_table(rows, SEED))
    assert batched.column("caption").to_pylist() == one_by_one  # left padding: a batch captions as one at a time


def test_chat_style_needs_a_chat_template(tiny):
    with pytest.raises(StageSetupError, match="stage caption could not set up .*has no chat template"):
        Captioner(CaptionConfig(model=tiny["captioner"], dtype="float32", style="chat")).start()


def test_caption_checks_keep_one_sentence_within_bounds_and_say_what_they_did():
    assert check_caption("A woman in an apron slicing vegetables. She smiles.", 3, 40) == (
        "A woman in an apron slicing vegetables", "first sentence kept")
    assert check_caption("a man " + "very " * 50 + "tall", 3, 10) == ("a man " + "very " * 7 + "very", "cut to 10 words")
    assert check_caption("chef", 3, 40) == ("a photo of a person", "fallback caption: 1 of at least 3 words")
    assert check_caption("a: b; c", 4, 40)[1] == "fallback caption: 3 of at least 4 words"
    assert check_caption("a man cooking pasta", 3, 40) == ("a man cooking pasta", None)

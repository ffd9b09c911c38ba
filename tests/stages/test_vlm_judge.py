"""The VLM yes/no judge: the yes/no token sets of three tokenizer families, and the tiny Qwen2.5-VL and LLaVA
judges answering (one forward pass a batch, batched == one at a time, abstentions)."""

from __future__ import annotations

import io

import pytest

from pipeline.testing.tiny_qwen import INSTRUCTION_WORDS, qwen2_tokenizer
from pipeline.testing.tiny_smolvlm import smolvlm_tokenizer
from pipeline.testing.tiny_transformers import CAPTION_WORDS
from stages.models.vlm_judge import Answer, VlmJudge, takes_two_images_for, yes_no_token_ids
from tests.helpers import noise_image

YES_CASES = ("yes", "Yes", "YES")
NO_CASES = ("no", "No", "NO")
# Batched and one-at-a-time forward passes differ by padding only: measured 2e-8 (Qwen2.5-VL) and 4e-8
# (LLaVA) in float32 on CPU.
BATCH_TOLERANCE = 1e-5


def literal_ids(tokenizer, spellings) -> set[int]:
    """Ids of the literal token strings that are in the vocabulary (worked out from the vocabulary alone)."""
    vocab = tokenizer.get_vocab()
    return {vocab[s] for s in spellings if s in vocab}


def decoded(tokenizer, ids) -> set[str]:
    return {tokenizer.decode([i], skip_special_tokens=False) for i in ids}


def word_level_tokenizer(tokens, decoder=None, name="word-level-test"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(["[UNK]", *tokens])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if decoder is not None:
        tok.decoder = decoder
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    tokenizer.name_or_path = name
    return tokenizer


def llava15_tokenizer(tmp_path):
    """LLaVA-1.5's tokenizer family (llava-hf/llava-1.5-*-hf): Llama's SentencePiece BPE with byte fallback,
    <unk> <s> </s> at 0 1 2, bos added, legacy False, then <image> and <pad>; trained offline on the caption
    and question words plus near misses (yesterday, nothing, nope)."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    words = sorted(set(CAPTION_WORDS) | set(INSTRUCTION_WORDS) | {"USER", "ASSISTANT", "Answer", "or", "yesterday",
                                                                   "nothing", "nope", "eyes"})
    variants = sorted({v for w in words for v in (w, w.lower(), w.capitalize())})
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(variants)] * 3 + variants), model_writer=model, model_type="bpe",
        vocab_size=1500, hard_vocab_limit=False, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, split_digits=True, add_dummy_prefix=True, normalization_rule_name="identity",
        minloglevel=2,
    )
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(tmp_path, legacy=False, add_bos_token=True, add_eos_token=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    return tokenizer


# --- yes/no token sets -------------------------------------------------------------------------------------


def test_qwen25_vl_byte_level_bpe_yes_no_tokens():
    tokenizer = qwen2_tokenizer()
    yes, no = yes_no_token_ids(tokenizer)
    assert set(yes) == literal_ids(tokenizer, [m + w for m in ("", "Ġ") for w in YES_CASES])
    assert set(no) == literal_ids(tokenizer, [m + w for m in ("", "Ġ") for w in NO_CASES])
    assert literal_ids(tokenizer, ["Yes", "yes", "Ġyes", "ĠYes"]) <= set(yes)  # the template answers "Yes" bare
    assert decoded(tokenizer, yes) <= {"yes", "Yes", "YES", " yes", " Yes", " YES"}
    assert decoded(tokenizer, no) <= {"no", "No", "NO", " no", " No", " NO"}
    assert {"Yes", " yes"} <= decoded(tokenizer, yes) and {"No", " no"} <= decoded(tokenizer, no)


def test_llava15_sentencepiece_yes_no_tokens(tmp_path):
    tokenizer = llava15_tokenizer(tmp_path)
    yes, no = yes_no_token_ids(tokenizer)
    assert set(yes) == literal_ids(tokenizer, [m + w for m in ("", "▁") for w in YES_CASES])
    assert set(no) == literal_ids(tokenizer, [m + w for m in ("", "▁") for w in NO_CASES])
    assert literal_ids(tokenizer, ["▁Yes", "▁yes", "▁No", "▁no"]) <= set(yes) | set(no)
    assert tokenizer.convert_ids_to_tokens(yes) and all(t.lstrip("▁").lower() == "yes"
                                                         for t in tokenizer.convert_ids_to_tokens(yes))
    near_misses = literal_ids(tokenizer, ["▁yesterday", "▁nothing", "▁nope", "▁eyes", "▁Nothing"])
    assert near_misses and not near_misses & (set(yes) | set(no))


def test_the_tiny_llavas_clip_bpe_yes_no_tokens(tiny):
    """The tiny llava carries CLIP's BPE (lower-cased, words end in </w>), not LLaVA-1.5's SentencePiece."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny["llava"])
    yes, no = yes_no_token_ids(tokenizer)
    assert set(yes) == literal_ids(tokenizer, ["yes</w>", "yes"])
    assert set(no) == literal_ids(tokenizer, ["no</w>", "no"])
    near_misses = literal_ids(tokenizer, ["yesterday</w>", "eyes</w>", "yess</w>", "nothing</w>", "yester"])
    assert len(near_misses) == 5 and not near_misses & (set(yes) | set(no))


def test_smolvlm_byte_level_bpe_yes_no_tokens():
    tokenizer = smolvlm_tokenizer()
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]  # SmolLM2's ids
    assert tokenizer.eos_token == "<end_of_utterance>" and tokenizer.pad_token == "<|im_end|>"
    yes, no = yes_no_token_ids(tokenizer)
    assert set(yes) == literal_ids(tokenizer, [m + w for m in ("", "Ġ") for w in YES_CASES])
    assert set(no) == literal_ids(tokenizer, [m + w for m in ("", "Ġ") for w in NO_CASES])
    assert decoded(tokenizer, yes) == {"yes", "Yes", "YES", " yes", " Yes", " YES"}
    specials = literal_ids(tokenizer, ["<image>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>"])
    assert len(specials) == 4 and not specials & (set(yes) | set(no))
    # SmolVLM's generation prompt ends "Assistant:", so its answer's first token is " Yes": ĠYes.
    turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this a man?"}]}
    prompt = tokenizer.apply_chat_template([turn], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>User:<image>Is this a man?<end_of_utterance>\nAssistant:"
    assert tokenizer(prompt + " Yes")["input_ids"][-1] == vocab["ĠYes"] and vocab["ĠYes"] in yes


def test_only_single_token_spellings_of_yes_and_no_count():
    spellings = ["yes", " Yes", "▁YES", "Ġyes", "yEs", "no</w>", "No", "▁no", "Ġno"]
    others = ["yesterday", "nothing", "No.", "yes!", "\nYes", "▁▁yes", "  no", "ye", "none", "ｙｅｓ", "Ġ", "▁"]
    tokenizer = word_level_tokenizer(spellings + others)
    yes, no = yes_no_token_ids(tokenizer)
    assert set(tokenizer.convert_ids_to_tokens(yes)) == {"yes", " Yes", "▁YES", "Ġyes", "yEs"}
    assert set(tokenizer.convert_ids_to_tokens(no)) == {"no</w>", "No", "▁no", "Ġno"}


def test_a_tokenizer_without_a_no_token_refuses_to_start():
    tokenizer = word_level_tokenizer(["yes", "Yes", "nothing", "No.", "none", "nope"], name="no-no-tokenizer")
    with pytest.raises(ValueError, match=r"no-no-tokenizer has no single-token spelling of 'no'") as error:
        yes_no_token_ids(tokenizer)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"of 'yes'"):
        yes_no_token_ids(word_level_tokenizer(["no", "yesterday"]))


def test_a_token_spelling_both_refuses_to_start():
    from tokenizers import decoders

    # token "yes" decodes to "no": one id in both sets
    tokenizer = word_level_tokenizer(["yes", "no"], decoder=decoders.Replace("yes", "no"))
    with pytest.raises(ValueError, match="spell both yes and no"):
        yes_no_token_ids(tokenizer)


@pytest.mark.parametrize("model_type,expected", [
    ("qwen2_vl", True), ("qwen2_5_vl", True), ("smolvlm", True), ("idefics3", True), ("idefics2", True),
    ("idefics", True), ("llava", False), ("blip", False),
])
def test_which_families_take_two_images(model_type, expected):
    assert takes_two_images_for(model_type) is expected


# --- the tiny judges ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_judge(tiny):
    judge = VlmJudge(tiny["qwen2.5-vl"], None, "cpu", "float32", min_answer_mass=0.0, batch_size=3)
    judge.setup()
    return judge


@pytest.fixture(scope="module")
def llava_judge(tiny):
    judge = VlmJudge(tiny["llava"], None, "cpu", "float32", min_answer_mass=0.0, batch_size=4)
    judge.setup()
    return judge


def images(*seeds, size=48):
    return [noise_image(s, size) for s in seeds]


QWEN_ITEMS = [
    (images(0), "Is this a man?"),
    (images(1, 2), "Do these show the same person?"),
    (images(3, size=32), "Is the person smiling in this image?"),
    (images(2, 1), "Do these show the same person?"),
    (images(4, size=64), "Is this a woman?"),
]


def count_forward_passes(judge):
    calls = []
    handle = judge.model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls, handle


def check_answers(answers, n):
    assert len(answers) == n and all(isinstance(a, Answer) for a in answers)
    for a in answers:
        assert 0.0 <= a.mass <= 1.0 and (a.p_yes is None or 0.0 <= a.p_yes <= 1.0)


def test_the_qwen_judge_asks_one_user_turn_with_its_images_first(qwen_judge):
    assert qwen_judge.takes_two_images and qwen_judge.model_type == "qwen2_5_vl"
    prompt = qwen_judge.prompt(2, "Do these show the same person?")
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert prompt.endswith(f"<|im_start|>user\n{image}{image}Do these show the same person? Answer yes or no."
                           "<|im_end|>\n<|im_start|>assistant\n")


def test_the_qwen_judge_answers_one_and_two_image_questions_one_forward_pass_a_batch(qwen_judge):
    calls, handle = count_forward_passes(qwen_judge)
    try:
        batched = qwen_judge.answer(QWEN_ITEMS)
    finally:
        handle.remove()
    assert len(calls) == 2  # 5 items, 3 a batch
    check_answers(batched, len(QWEN_ITEMS))
    assert all(a.p_yes is not None for a in batched)
    assert len({round(a.p_yes, 12) for a in batched}) > 1  # the images and questions reach the model
    single = [qwen_judge.answer([item])[0] for item in QWEN_ITEMS]
    difference = max(max(abs(b.p_yes - s.p_yes), abs(b.mass - s.mass)) for b, s in zip(batched, single))
    assert difference < BATCH_TOLERANCE


def test_below_min_answer_mass_every_answer_abstains(qwen_judge, monkeypatch):
    monkeypatch.setattr(qwen_judge, "min_answer_mass", 1.01)
    answers = qwen_judge.answer(QWEN_ITEMS[:2])
    check_answers(answers, 2)
    assert all(a.p_yes is None and a.abstained and a.mass > 0.0 for a in answers)


def test_the_llava_judge_answers_one_image_questions(llava_judge):
    assert llava_judge.takes_two_images is False and llava_judge.model_type == "llava"
    assert llava_judge.prompt(1, "Is this a man?") == "USER: <image>\nIs this a man? Answer yes or no. ASSISTANT:"
    items = [(images(0), "Is this a man?"), (images(5, size=40), "Is the person smiling in this photo?")]
    batched = llava_judge.answer(items)
    check_answers(batched, 2)
    single = [llava_judge.answer([item])[0] for item in items]
    assert max(abs(b.p_yes - s.p_yes) for b, s in zip(batched, single)) < BATCH_TOLERANCE
    with pytest.raises(ValueError, match="one image a prompt"):
        llava_judge.answer([(images(0, 1), "Do these show the same person?")])

"""LLaVA-1.5's encoding and answer tokens with a LLaMA-style SentencePiece tokenizer trained here, offline,
with Llama's settings (BPE, byte fallback, dummy prefix) and loaded the legacy way LLaVA loads it. The
tiny model's CLIP BPE tokenizer cannot show either bug this guards: a bare "\u2581" piece before " yes"
and " no", and a prompt that is not LLaVA's. The reference below is LLaVA's own code (llava/mm_utils.py
tokenizer_image_token, llava/train/train.py preprocess_v1 for the v1 template), adapted only in that this
tokenizer does not add BOS by itself."""

import io
import random

import pytest

from pipeline.trainers.llava import IGNORE_INDEX, answer_token_ids, encode_member

IMAGE_TOKEN_INDEX = -200
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
TURNS = [
    {"from": "human", "value": "<image>\nWhat kind of person does this image show?"},
    {"from": "gpt", "value": "The image shows a person in a position of authority."},
    {"from": "human", "value": "Would you describe this person as a person in a position of authority? Answer yes or no."},
    {"from": "gpt", "value": "Yes."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    import sentencepiece as spm
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    rng = random.Random(0)
    words = (SYSTEM + " " + " ".join(t["value"] for t in TURNS) + " USER ASSISTANT yes no Yes No chef nurse").split()
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(3000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=500, byte_fallback=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, allow_whitespace_only_pieces=True,
        minloglevel=2)
    path = tmp_path_factory.mktemp("sp") / "llama_tiny.model"
    path.write_bytes(model.getvalue())
    tok = SentencePieceBackend(vocab_file=str(path), legacy=True, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok


class Processor:
    """What encode_member reads of a LLaVA processor: its tokenizer, image token and image processor."""

    image_token = "<image>"

    def __init__(self, tokenizer):
        from transformers import CLIPImageProcessor

        self.tokenizer = tokenizer
        self.image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})


def llava_reference(tok, turns):
    """conv_vicuna_v1.get_prompt() and preprocess_v1 as LLaVA runs them; returns (input_ids, labels)."""
    seps = [" ", "</s>"]
    prompt = SYSTEM + seps[0]
    for i, turn in enumerate(turns):
        role = {"human": "USER", "gpt": "ASSISTANT"}[turn["from"]]
        prompt += role + ": " + turn["value"] + seps[i % 2]

    def tokenizer_image_token(text):
        prompt_chunks = [[tok.bos_token_id] + tok(chunk, add_special_tokens=False).input_ids for chunk in text.split("<image>")]

        def insert_separator(X, sep):
            return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

        input_ids, offset = [], 0
        if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tok.bos_token_id:
            offset = 1
            input_ids.append(prompt_chunks[0][0])
        for x in insert_separator(prompt_chunks, [IMAGE_TOKEN_INDEX] * (offset + 1)):
            input_ids.extend(x[offset:])
        return input_ids

    input_ids = tokenizer_image_token(prompt)
    target = list(input_ids)
    sep = seps[0] + "ASSISTANT" + ": "
    rounds = prompt.split(seps[1])
    cur_len = 1
    target[:cur_len] = [IGNORE_INDEX] * cur_len
    for rou in rounds:
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou))
        instruction_len = len(tokenizer_image_token(parts[0])) - 2
        target[cur_len : cur_len + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur_len += round_len
    target[cur_len:] = [IGNORE_INDEX] * (len(target) - cur_len)
    assert cur_len == len(input_ids), "LLaVA itself would mask this sample: tokenization mismatch"
    return input_ids, target


def expand(ids, values, count):
    """LLaVA's single -200 placeholder as the HF processor expands it: ``count`` positions of ``values``'s entry."""
    out = []
    for i, value in zip(ids, values):
        out += [value] * count if i == IMAGE_TOKEN_INDEX else [value]
    return out


def test_members_are_encoded_token_for_token_as_llava_1_5_encodes_them(tokenizer):
    from PIL import Image

    image_id = tokenizer.convert_tokens_to_ids("<image>")
    encoded = encode_member(Processor(tokenizer), Image.new("RGB", (20, 20)), TURNS, image_tokens=4)
    ids, labels = llava_reference(tokenizer, TURNS)
    assert encoded["input_ids"] == expand(ids, [image_id if i == IMAGE_TOKEN_INDEX else i for i in ids], 4)
    assert encoded["labels"] == expand(ids, labels, 4)
    trained = tokenizer.convert_ids_to_tokens([t for t in encoded["labels"] if t != IGNORE_INDEX])
    assert trained[0] == "\u2581The" and trained[-3:] == ["\u2581Yes", ".", "</s>"] and trained.count("</s>") == 2
    assert tokenizer.decode(encoded["input_ids"][1:20]).startswith("A chat between a curious user")


def test_yes_and_no_are_told_apart_by_the_tokens_llava_answers_with(tokenizer):
    # The trap: SentencePiece encodes a lone " yes" and " no" as a bare "\u2581" piece first.
    first = [tokenizer(text, add_special_tokens=False)["input_ids"][0] for text in (" yes", " no")]
    assert first[0] == first[1] and tokenizer.convert_ids_to_tokens(first[0]) == "\u2581"
    yes, no = answer_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens([yes, no]) == ["\u2581Yes", "\u2581No"]
    # the token LLaVA trains as the answer's first label is the one compared
    _, labels = llava_reference(tokenizer, TURNS[2:])
    assert [t for t in labels if t != IGNORE_INDEX][0] == yes

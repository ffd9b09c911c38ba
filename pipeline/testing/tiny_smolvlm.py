"""A SmolVLM-family tokenizer built offline: what HuggingFaceTB/SmolVLM-Instruct ships, over a small vocabulary.

SmolVLM's language model is SmolLM2, whose tokenizer is GPT-2-style byte-level BPE: no normaliser, a
pre-tokenizer that splits every digit on its own and then applies GPT-2's byte-level regex (no prefix space),
a byte-level decoder, and SmolLM2's 17 special tokens at ids 0 to 16 (``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``, the code-corpus markers). SmolVLM appends its own after the regular vocabulary: ``<global-img>``,
the 36 image-tile markers ``<row_R_col_C>``, ``<fake_token_around_image>``, ``<image>`` and
``<end_of_utterance>``. Its tokenizer_config has bos ``<|im_start|>``, eos ``<end_of_utterance>``, pad
``<|im_end|>`` and unk ``<|endoftext|>``, and its chat template writes ``User:<image>...<end_of_utterance>``
and ends the generation prompt with ``Assistant:`` (so the answer's first token is `` Yes``: ``ĠYes``).

No SmolVLM model is built here: transformers' SmolVLM processor needs the ``num2words`` package.
"""

from __future__ import annotations

from pipeline.testing.tiny_qwen import INSTRUCTION_WORDS
from pipeline.testing.tiny_transformers import CAPTION_WORDS

# SmolLM2's special tokens, ids 0..16 of its vocabulary.
SMOLLM2_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
]

# SmolVLM's tokens, added after the regular vocabulary in this order.
SMOLVLM_ADDED_TOKENS = (
    ["<global-img>"]
    + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    + ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
)

# SmolVLM-Instruct's chat template (chat_template.json on the Hub).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Words of the chat template and of judge questions besides the caption and instruction words.
SMOLVLM_WORDS = "User Assistant Answer or".split()


def smolvlm_tokenizer():
    """A SmolVLM-Instruct-style tokenizer (transformers ``TokenizersBackend``) in memory: byte-level BPE with
    SmolLM2's pre-tokenizer and special tokens trained on the caption, instruction and template words (each
    bare, space-prefixed and capitalised one token: ``yes``, ``Ġyes``, ``Yes``, ``ĠYes``, ``YES``, ``no``,
    ``Ġno``, ``No``, ``ĠNo``, ``NO`` among them), SmolVLM's added tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    words = sorted(set(CAPTION_WORDS) | set(INSTRUCTION_WORDS) | set(SMOLVLM_WORDS))
    variants = sorted({v for w in words for v in (w, w.lower(), w.capitalize())})
    corpus = variants + [" " + v for v in variants] + [" ".join(variants)]
    trainer = trainers.BpeTrainer(
        vocab_size=4096, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SMOLLM2_SPECIAL_TOKENS,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SMOLVLM_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>", add_prefix_space=False, clean_up_tokenization_spaces=False,
        model_max_length=16384,
    )
    tokenizer.chat_template = SMOLVLM_CHAT_TEMPLATE
    return tokenizer

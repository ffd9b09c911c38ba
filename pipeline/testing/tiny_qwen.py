"""Tiny Qwen-family models built offline: a Qwen2-style byte-level BPE tokenizer (trained on the caption and
instruction words), a Qwen2.5-VL chat VLM with its processor, and a Qwen-Image-Edit-Plus pipeline that uses
that VLM as its text encoder (the layout of diffusers' own Qwen-Image tests, saved with the offline
tokenizer and processor instead of the Hub ones)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.testing.tiny_transformers import CAPTION_WORDS

# Qwen2's pre-tokenizer split regex (as transformers' Qwen2Tokenizer and the Hub tokenizer.json have it).
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5's special tokens, in the order (and so with the relative ids) the real vocabulary has them right
# after the regular BPE tokens (<|endoftext|> is 151643 there).
QWEN2_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Words besides CAPTION_WORDS the tokenizer knows whole: edit instructions, VLM questions and answers, and
# the chat template's own words.
INSTRUCTION_WORDS = """make turn change the person into keep same face shape clothing pose background describe this
image in one sentence is are these does show yes no Yes No YES NO You are a helpful assistant system user
assistant Picture Video what which who how""".split()

# System prompts the tokenizer sees whole in training, so that (as with the real vocabulary) each of their
# words is one token: Qwen2.5-VL's default one and the one diffusers' Qwen-Image-Edit(-Plus) pipelines wrap
# prompts in (they then drop its first 64 tokens, its length with the real tokenizer).
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "Describe the key features of the input image (color, shape, size, texture, objects, background), then "
    "explain how the user's text instruction should alter or modify the image. Generate a new image that meets "
    "the user's requirements while maintaining consistency with the original input where appropriate.",
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of "
    "the objects and background:",
]

# Qwen2.5-VL's chat template as Qwen/Qwen2.5-VL-*-Instruct ship it (chat_template.json).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen2_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE (Qwen2's pre-tokenizer, all 256 byte symbols) until every corpus word, bare,
    space-prefixed and capitalised, is a single token."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    words = sorted(set(CAPTION_WORDS) | set(INSTRUCTION_WORDS))
    variants = sorted({v for w in words for v in (w, w.lower(), w.capitalize())})
    corpus = variants + [" " + v for v in variants] + [" ".join(variants)] + SYSTEM_PROMPTS
    trainer = trainers.BpeTrainer(
        vocab_size=4096, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def qwen2_tokenizer():
    """A Qwen2/Qwen2.5 tokenizer (``Qwen2TokenizerFast``) in memory: byte-level BPE with Qwen2's split regex
    and NFC normaliser over a small trained vocabulary, Qwen2.5's special tokens after it (``<|endoftext|>``
    pad, ``<|im_end|>`` eos, the vision tokens) and Qwen2.5-VL's chat template. ``Yes``, ``yes``, `` yes``,
    ``No``, ``no``, `` no`` and every caption word are single tokens."""
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab, merges = _qwen2_bpe_vocab()
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", add_prefix_space=False, errors="replace", model_max_length=32768,
        clean_up_tokenization_spaces=False, split_special_tokens=False,
    )
    # Added in Qwen2.5's order so ids follow the regular vocabulary as in the real one.
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "extra_special_tokens": QWEN2_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = QWEN25_VL_CHAT_TEMPLATE
    return tokenizer


def _qwen25_vl_parts():
    """The tiny Qwen2.5-VL model, tokenizer and processor (in memory). The vision tower has 8 px patches and a
    2x2 merge (16 px a token, the real one 28 px) and the processor keeps images between 32x32 and 64x64 px,
    so an image gives 4 to 16 tokens."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = qwen2_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_SPECIAL_TOKENS}
    vision = dict(patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
            # head_dim 16: the (temporal, height, width) rotary sections split its 8 frequencies as the real
            # [16, 24, 24] split 64.
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, window_size=32,
            fullatt_block_indexes=[1], tokens_per_second=2, **vision,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    generation = model.generation_config
    generation.bos_token_id = ids["<|endoftext|>"]
    generation.pad_token_id = ids["<|endoftext|>"]
    generation.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    generation.do_sample = False
    generation.max_new_tokens = 12
    sizes = dict(min_pixels=32 * 32, max_pixels=64 * 64, patch_size=vision["patch_size"], merge_size=2,
                 temporal_patch_size=vision["temporal_patch_size"])
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes), video_processor=Qwen2VLVideoProcessor(**sizes),
        tokenizer=tokenizer, chat_template=QWEN25_VL_CHAT_TEMPLATE,
    )
    return model, tokenizer, processor


def build_qwen25_vl(out: Path) -> None:
    """A Qwen2.5-VL chat VLM (Qwen2_5_VLForConditionalGeneration: a windowed-attention ViT with a 2x2 patch
    merger, a two-layer Qwen2 decoder with multimodal rotary positions) with its processor, the offline Qwen2
    tokenizer and Qwen2.5-VL's chat template: a tiny VLM judge and captioner, and the Qwen-Image editors' text
    encoder."""
    import torch

    torch.manual_seed(0)
    model, _, processor = _qwen25_vl_parts()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


# Qwen/Qwen-Image(-Edit-2509) scheduler/scheduler_config.json: flow matching with resolution-dependent shift.
QWEN_IMAGE_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
    base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    invert_sigmas=False, stochastic_sampling=False, use_karras_sigmas=False, use_exponential_sigmas=False,
    use_beta_sigmas=False,
)


def build_qwen_image_edit(out: Path) -> None:
    """A Qwen-Image-Edit-2509-layout ``QwenImageEditPlusPipeline`` (several reference images per prompt): a
    one-block Qwen-Image MMDiT, a Qwen-Image (Wan-style causal 3D) VAE with the real 8x spatial compression,
    the tiny Qwen2.5-VL as text encoder with its Qwen2-VL processor and the offline Qwen2 tokenizer, and
    Qwen-Image's flow-matching scheduler (the layout of diffusers' own Qwen-Image-Edit-Plus tests).

    The pipeline always encodes each reference image at about 1024x1024 px whatever its size, so the VAE is
    as thin as it goes (4 base channels): that encoding is most of a call's time on CPU."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2VLProcessor

    torch.manual_seed(0)
    z_dim = 4
    text_encoder, tokenizer, vl_processor = _qwen25_vl_parts()
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=z_dim * 4, out_channels=z_dim, num_layers=1, attention_head_dim=16,
        num_attention_heads=3, joint_attention_dim=text_encoder.config.text_config.hidden_size,
        guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=4, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
    )
    processor = Qwen2VLProcessor(
        image_processor=vl_processor.image_processor, video_processor=vl_processor.video_processor,
        tokenizer=tokenizer, chat_template=QWEN25_VL_CHAT_TEMPLATE,
    )
    pipe = QwenImageEditPlusPipeline(
        transformer=transformer, vae=vae.eval(), text_encoder=text_encoder, tokenizer=tokenizer,
        processor=processor, scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER_CONFIG),
    )
    pipe.save_pretrained(out, safe_serialization=True)

"""Tiny FLUX.2 [klein] pipelines built offline: ``Flux2KleinPipeline`` with a one-block Flux2 DiT, a
four-level ``AutoencoderKLFlux2`` (8x downsampling, so sizes follow the real model's multiple of 16), a
narrow 28-layer Qwen3 text encoder and the offline Qwen2-style tokenizer (the layout of diffusers' own
Klein tests, saved with the offline tokenizer instead of the Hub one).

The pipeline stacks the text encoder's hidden states at layers ``text_encoder_out_layers=(9, 18, 27)`` by
default, so the tiny Qwen3 has 28 layers (index 27 is an intermediate layer, as in the real 36-layer
Qwen3-4B) and the DiT's ``joint_attention_dim`` is 3 x its hidden size: production calls need no special
argument. ``build_flux2_klein`` saves the step-distilled variant (``is_distilled=True``: guidance is ignored),
``build_flux2_klein_base`` the base one (``is_distilled=False``: CFG against the empty prompt when
``guidance_scale > 1``); the two differ only in that flag."""

from __future__ import annotations

from pathlib import Path

from pipeline.testing.tiny_qwen import qwen2_tokenizer

# Qwen3's chat template (Qwen/Qwen3-4B), reduced to plain-text messages: no default system prompt, and with
# ``enable_thinking=False`` the generation prompt gets an empty think block, as the Klein pipeline asks.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

# Layers the pipeline reads by default (Flux2KleinPipeline.__call__'s text_encoder_out_layers).
KLEIN_TEXT_LAYERS = (9, 18, 27)
TEXT_HIDDEN = 16


def qwen3_tokenizer():
    """The offline Qwen2-style tokenizer with Qwen3's ``<think>``/``</think>`` tokens and chat template."""
    from tokenizers import AddedToken

    tokenizer = qwen2_tokenizer()
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def _tiny_qwen3(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=16,
        num_hidden_layers=max(KLEIN_TEXT_LAYERS) + 1, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3ForCausalLM(config).eval()


def _tiny_flux2_vae():
    from diffusers import AutoencoderKLFlux2

    # Four levels like the real VAE: vae_scale_factor 8, so height/width go by multiples of 16.
    return AutoencoderKLFlux2(
        sample_size=64, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
    )


def _klein_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX's flow-matching schedule with resolution-dependent (dynamic) shifting: the pipeline passes ``mu``.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential",
    )


def _build_klein(out: Path, is_distilled: bool) -> None:
    import torch
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel

    tokenizer = qwen3_tokenizer()
    torch.manual_seed(0)
    vae = _tiny_flux2_vae()
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=vae.config.latent_channels * 4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=len(KLEIN_TEXT_LAYERS) * TEXT_HIDDEN,
        timestep_guidance_channels=256, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )
    torch.manual_seed(0)
    text_encoder = _tiny_qwen3(tokenizer)
    pipe = Flux2KleinPipeline(
        scheduler=_klein_scheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer, is_distilled=is_distilled,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def build_flux2_klein(out: Path) -> None:
    """A FLUX.2 [klein] (step-distilled, ``is_distilled=True``) pipeline: guidance_scale is ignored."""
    _build_klein(Path(out), is_distilled=True)


def build_flux2_klein_base(out: Path) -> None:
    """A FLUX.2 [klein] base (``is_distilled=False``) pipeline: CFG against "" when guidance_scale > 1."""
    _build_klein(Path(out), is_distilled=False)

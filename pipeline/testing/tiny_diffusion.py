"""Tiny diffusers pipelines built offline: InstructPix2Pix, Stable Diffusion (text-to-image, img2img,
inpainting), SDXL and FLUX.1 Kontext, each with tiny UNet/DiT, VAE and text encoders and real tokenizers."""

from __future__ import annotations

from pathlib import Path

from pipeline.testing.tiny_transformers import CAPTION_WORDS, clip_text_config, clip_tokenizer

def _tiny_unet(in_channels: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **{"cross_attention_dim": 32, "attention_head_dim": 8, **extra},
    )


def _tiny_vae(**extra):
    from diffusers import AutoencoderKL

    # Three levels: 4x downsampling keeps the latents small at the mini-run's 64 px.
    settings = dict(
        block_out_channels=[16, 32, 32], in_channels=3, out_channels=3, norm_num_groups=16,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4, sample_size=64,
    )
    settings.update(extra)
    return AutoencoderKL(**settings)


def _sharpen_attention(unet, factor: float = 6.0) -> None:
    """Scale the UNet's attention queries and keys so its random attention maps are peaked, as a trained
    model's are, instead of near uniform: prompt-to-prompt controls attention maps, and with uniform maps
    there is nothing for it to control (the p2p test measures the difference it makes)."""
    import torch

    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith(("attn1", "attn2")):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)


def _sd_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )


def _save_sd_pipeline(out: Path, pipeline_class, unet, scheduler) -> None:
    """A Stable Diffusion 1.5-layout pipeline around ``unet``: tiny VAE, CLIP text encoder, real CLIP BPE."""
    from transformers import CLIPTextModel

    pipe = pipeline_class(
        unet=unet, vae=_tiny_vae(), text_encoder=CLIPTextModel(clip_text_config()),
        tokenizer=clip_tokenizer(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def build_instruct_pix2pix(out: Path) -> None:
    """A StableDiffusionInstructPix2PixPipeline: a UNet with 8 input channels (latents + seed latents)."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    torch.manual_seed(0)
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    _save_sd_pipeline(out, StableDiffusionInstructPix2PixPipeline, _tiny_unet(8), scheduler)


def build_stable_diffusion(out: Path) -> None:
    """A Stable Diffusion 1.5-layout pipeline (4-channel UNet, DDIM): text-to-image and img2img."""
    import torch
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    unet = _tiny_unet(4)
    _sharpen_attention(unet)
    _save_sd_pipeline(out, StableDiffusionPipeline, unet, _sd_scheduler())


def build_stable_diffusion_inpaint(out: Path) -> None:
    """A Stable Diffusion inpainting pipeline: 9 input channels (latents, mask, masked-image latents)."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    torch.manual_seed(0)
    _save_sd_pipeline(out, StableDiffusionInpaintPipeline, _tiny_unet(9), _sd_scheduler())


def build_sdxl(out: Path) -> None:
    """An SDXL-layout pipeline: two text encoders (the second with a projection) and text-time conditioning."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = _tiny_unet(
        4, cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
    )
    _sharpen_attention(unet)
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=_tiny_vae(), text_encoder=CLIPTextModel(clip_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(projection_dim=32)),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), scheduler=_sd_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _t5_tokenizer():
    """A T5 tokenizer (Unigram over the caption words, spelled out letter by letter when unknown)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words = sorted(set(CAPTION_WORDS) | set("turn into make change the person".split()))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz-,."]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def build_flux_kontext(out: Path) -> None:
    """A FLUX.1 Kontext-layout pipeline: a one-block MMDiT, a CLIP and a T5 text encoder, a flow-matching
    scheduler (the layout of diffusers' own Kontext tests, saved with real tokenizers)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    )
    vae = _tiny_vae(
        block_out_channels=[8, 8, 8], norm_num_groups=8, latent_channels=1, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    t5 = T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
    pipe = FluxKontextPipeline(
        transformer=transformer, vae=vae, text_encoder=CLIPTextModel(clip_text_config(projection_dim=32)),
        tokenizer=clip_tokenizer(), text_encoder_2=t5, tokenizer_2=_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(out, safe_serialization=True)

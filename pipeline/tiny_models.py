"""Tiny random-weight versions of every model backend the configs can name, built offline.

No machine of this project can download weights. Tests and the mini-run build these small models from
configs (the way diffusers' and transformers' own tests do), save them with ``save_pretrained`` /
safetensors into a cache directory, and then load them back through the same production loading code a
real Hub id goes through. They check plumbing, shapes, determinism and speed ratios, not image quality:
a random captioner writes word salad and a random editor paints noise.

Configs refer to them as ``tiny:NAME``: ``tiny:captioner``, ``tiny:clip``, the editors
``tiny:instruct-pix2pix``, ``tiny:stable-diffusion`` (text-to-image and img2img),
``tiny:stable-diffusion-inpaint``, ``tiny:sdxl``, ``tiny:flux-kontext``, the segmenter ``tiny:clipseg``, and
``tiny:llava`` for the trainers' side;
:func:`resolve_model_ref` builds them on first use and returns the local directory.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

# Bump when a builder changes so caches of older builds are not reused.
TINY_MODELS_VERSION = 4
TINY_PREFIX = "tiny:"

# Words the tiny captioner can emit: enough caption vocabulary, attribute words and concept words that
# the planner's word swapping is exercised by the random captions.
CAPTION_WORDS = """a an the photo picture image of man woman person people boy girl chef doctor nurse student
teacher worker officer scientist artist standing sitting smiling holding cooking working reading in at on
with and kitchen office classroom laboratory street table desk book tool hammer knife food uniform hat
young old white black asian indian latino skinny obese tattooed he she his her him male female""".split()


def default_cache_dir() -> Path:
    root = os.environ.get("COUNTERFACTORY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "counterfactory"
    )
    return Path(root) / f"tiny-models-v{TINY_MODELS_VERSION}"


def _build_clip_bpe_files(directory: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt for a transformers CLIPTokenizer, from the BPE vocabulary open_clip ships."""
    import open_clip.tokenizer as oc_tokenizer

    bpe_path = oc_tokenizer.default_bpe()
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    merge_pairs = [tuple(m.split()) for m in merges]
    byte_vocab = list(oc_tokenizer.bytes_to_unicode().values())
    vocab = byte_vocab + [v + "</w>" for v in byte_vocab]
    vocab.extend("".join(pair) for pair in merge_pairs)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    vocab_path = directory / "vocab.json"
    merges_path = directory / "merges.txt"
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in merge_pairs) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_clip_tokenizer(work: Path):
    from transformers import CLIPTokenizer

    vocab_path, merges_path = _build_clip_bpe_files(work)
    return CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=77)


def build_captioner(out: Path) -> None:
    """A BLIP image-captioning model (the production default family) with a small word vocabulary."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(specials + CAPTION_WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(specials) + len(CAPTION_WORDS), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, encoder_hidden_size=32,
            max_position_embeddings=64, bos_token_id=5, sep_token_id=3, eos_token_id=3, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        ),
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = 12
    model.generation_config.no_repeat_ngram_size = 1
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


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


def clip_text_config(**extra):
    """A CLIP text encoder config with CLIP's vocabulary and special token ids; tiny sizes unless
    ``extra`` gives others (benchmarks/gpu_editor.py builds the production sizes with it)."""
    from transformers import CLIPTextConfig

    settings = dict(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=49408, max_position_embeddings=77,
    )
    settings.update(extra)
    return CLIPTextConfig(**settings)


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


def clip_tokenizer():
    """CLIP's tokenizer in memory, from the BPE vocabulary open_clip ships."""
    with tempfile.TemporaryDirectory() as work:
        return build_clip_tokenizer(Path(work))


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


def build_clipseg(out: Path) -> None:
    """A CLIPSeg text-prompted segmenter (the inpainting backend's mask source)."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    torch.manual_seed(0)
    config = CLIPSegConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=32, extract_layers=[0, 1], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    model = CLIPSegForImageSegmentation(config).eval()
    image_processor = ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    )
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=build_clip_tokenizer(out))
    for name in ("vocab.json", "merges.txt"):
        (out / name).unlink()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def build_clip(out: Path) -> None:
    """An open_clip ViT in open_clip's local-dir layout (open_clip_config.json + safetensors weights)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    model = open_clip.CLIP(**model_cfg)
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2), encoding="utf-8"
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))


def build_llava(out: Path) -> None:
    """A LLaVA-1.5-style MLLM (CLIP vision tower, MLP projector, Llama decoder) with the real CLIP BPE
    tokenizer plus an ``<image>`` token: what the trainers' side (ASD, steering) is tested on."""
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer(out)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<|endoftext|>"})
    tokenizer.model_max_length = 128
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_index=image_token, image_seq_length=16, vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    for name in ("vocab.json", "merges.txt"):  # the tokenizer's own copies are saved with the processor
        (out / name).unlink()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "captioner": build_captioner,
    "instruct-pix2pix": build_instruct_pix2pix,
    "stable-diffusion": build_stable_diffusion,
    "stable-diffusion-inpaint": build_stable_diffusion_inpaint,
    "sdxl": build_sdxl,
    "flux-kontext": build_flux_kontext,
    "clipseg": build_clipseg,
    "clip": build_clip,
    "llava": build_llava,
}


def build(name: str, cache_dir: Path | None = None) -> Path:
    """Build tiny model ``name`` into the cache (once) and return its directory."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(sorted(BUILDERS))}")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = root / name
    if (final / ".complete").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the final place and rename: concurrent builders never see a half-written model.
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        BUILDERS[name](work)
        (work / ".complete").write_text("ok\n")
        try:
            os.rename(work, final)
        except OSError:
            if not (final / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def is_tiny_ref(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith(TINY_PREFIX)


def resolve_model_ref(ref: str, cache_dir: Path | None = None) -> str:
    """``tiny:NAME`` -> the built local directory; anything else (Hub id, local dir) unchanged."""
    if is_tiny_ref(ref):
        return str(build(ref[len(TINY_PREFIX) :], cache_dir))
    return ref


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny offline models into the cache.")
    parser.add_argument("names", nargs="*", default=sorted(BUILDERS))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in args.names:
        print(build(name, args.cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tiny transformers-side models built offline: the BLIP captioner, CLIP tokenizer and text config (with
the BPE vocabulary open_clip ships), CLIPSeg, an open_clip ViT and a LLaVA-1.5-style MLLM."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
import tempfile

# Words the tiny captioner can emit: enough caption vocabulary, attribute words and concept words that
# the planner's word swapping is exercised by the random captions.
CAPTION_WORDS = """a an the photo picture image of man woman person people boy girl chef doctor nurse student
teacher worker officer scientist artist standing sitting smiling holding cooking working reading in at on
with and kitchen office classroom laboratory street table desk book tool hammer knife food uniform hat
young old white black asian indian latino skinny obese tattooed he she his her him male female""".split()


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


def clip_tokenizer():
    """CLIP's tokenizer in memory, from the BPE vocabulary open_clip ships."""
    with tempfile.TemporaryDirectory() as work:
        return build_clip_tokenizer(Path(work))


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


# LLaVA-1.5's chat template as llava-hf ships it: "USER: <image>\n{text} ASSISTANT:" (a chat VLM for captioning).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_llava(out: Path) -> None:
    """A LLaVA-1.5-style MLLM (CLIP vision tower, MLP projector, Llama decoder) with the real CLIP BPE
    tokenizer plus an ``<image>`` token: what the trainers' side (ASD, steering) is tested on, and with
    LLaVA-1.5's chat template the chat captioner."""
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
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    for name in ("vocab.json", "merges.txt"):  # the tokenizer's own copies are saved with the processor
        (out / name).unlink()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)

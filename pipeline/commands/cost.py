"""Cost planning: GPU-hours and wall time of a run, from measured throughput or from FLOP counts.

Built-in estimates come from FLOPs per image and each GPU's dense bf16 peak, at a sustained utilisation that
batched diffusion reaches in practice (30%; batch-1 reaches 15-35%). FLOPs per image (docs/references.md):

- UNet editors (sd, sdxl): an SD 1.5-class UNet evaluation at 512 px is ~0.85 TFLOP, an SDXL one ~1.68,
  scaling with pixel count; the seed enters as latent channels, not tokens.
- DiT editors (flux: FLUX.1 Kontext; flux2_klein: FLUX.2 [klein] 4B; qwen_image: Qwen-Image-Edit), by token
  arithmetic: one evaluation is 2 x (weights each token passes through) x T + 4 x T^2 x width x layers, where
  T = output tokens + context image tokens + text tokens, one token per 16 x 16 pixels (8x VAE, 2x2
  patches). The context image is the seed crop at the output size for Kontext and klein; Qwen's edit
  pipeline always encodes it at about 1 MP (1024^2), whatever the output size (``Editor.context_pixels``).
- Every image: steps x evaluations per step (``Editor.denoiser_evals_per_step``: CFG 2, InstructPix2Pix 3,
  distilled 1) x one evaluation, a VAE decode (~2.5 TFLOP at 512 px, scaling with pixels; the seed's encode,
  under 0.1% of a DiT edit, is not counted) and two CLIP ViT-L/14 image passes (candidate and seed).

Captioning counts 2 x parameters x (prompt tokens + generated tokens) x beams per seed, at the same
utilisation (an optimistic bound: token-by-token decoding is memory-bound; measure it with the key
``caption``). A throughput file of measured numbers replaces either:

    {"instruct_pix2pix": {"h100": 4.2}, "caption": {"h100": 30.0}}   # images (seeds) per second per GPU
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.commands.plan import plan_counts
from stages.edit import registry
from stages.edit.config import EditConfig

# UNet TFLOP per evaluation at 512 px. SD 1.5: 0.85. SDXL: 413 TFLOP for 30 steps x 2 evaluations at
# 1024 px, less the decode, is 6.7 at 1024 px.
DENOISER_TFLOP_512 = {"sd": 0.85, "sdxl": 6.7 / 4}


@dataclass(frozen=True)
class DitShape:
    """What a DiT's FLOPs per evaluation follow from: the weights one token passes through (billions), the
    attention width and layers, and the text tokens beside the image tokens."""

    token_weights_b: float
    width: int
    layers: int
    text_tokens: int


# FLUX.1 Kontext-dev: 11.9B, 6.45B on a token's path, 19 double + 38 single blocks of 3072, T5 at 512 tokens.
# FLUX.2 [klein] 4B: 3.88B, 3.07B on a token's path, 5 double + 20 single blocks of 3072, Qwen3 at 512 tokens.
# Qwen-Image-Edit: 20.4B, 6.8B on a token's path, 60 dual-stream blocks of 3072; Qwen2.5-VL sees the seed at
# 384^2 (196 tokens) beside about 40 of instruction.
DIT_SHAPES = {
    "flux": DitShape(6.45, 3072, 57, 512),
    "flux2_klein": DitShape(3.07, 3072, 25, 512),
    "qwen_image": DitShape(6.8, 3072, 60, 196 + 40),
}
PIXELS_PER_TOKEN = 16 * 16
VAE_DECODE_TFLOP_512 = 2.5
CLIP_L14_TFLOP = 0.16
PEAK_TFLOPS = {"h100": 800.0, "h200": 800.0, "a100": 312.0, "l40s": 362.0, "a10g": 125.0, "l4": 121.0}
DEFAULT_UTILISATION = 0.30
# Captioners: (parameters in billions, tokens read per image). BLIP-large: ViT-L/16 at 384 px (577 patches)
# and a BERT-base text decoder; LLaVA-1.5-7B: 576 image tokens; Qwen2.5-VL-7B: a token per 28 x 28 pixels,
# ~1,300 for a 1024 x 1024 seed; SmolVLM-Instruct (2.2B): ~1,200 at its default 4 x 4 tiling.
CAPTIONERS = {
    "Salesforce/blip-image-captioning-large": (0.47, 577),
    "llava-hf/llava-1.5-7b-hf": (7.06, 576),
    "Qwen/Qwen2.5-VL-7B-Instruct": (8.29, 1300),
    "HuggingFaceTB/SmolVLM-Instruct": (2.25, 1200),
}
TOKENS_PER_WORD = 1.3


@dataclass
class CostEstimate:
    images: int
    seconds_per_image: float
    source: str
    gpu_hours: float  # the editor's
    wall_hours: float
    gpus: int
    captions: int = 0  # seeds the captioner reads
    caption_gpu_hours: float | None = None  # None: the captioner's size is unknown
    caption_source: str = ""
    judge_questions: int = 0  # filter.judge's questions, if every candidate passed the CLIP checks (an upper bound)
    judge_gpu_hours: float | None = None  # None: no judge, or its size is unknown
    judge_source: str = ""


def caption_tflop(caption) -> float | None:
    """TFLOP to caption one seed: 2 x parameters x (image + prompt + generated tokens) x beams."""
    params, image_tokens = CAPTIONERS.get(caption.model, (None, None))
    params, image_tokens = caption.params_b or params, caption.image_tokens or image_tokens
    if params is None or image_tokens is None:
        return None
    # auto resolves only once the processor loads: BLIP-family models have no chat template
    prefix = caption.style == "prefix" or (caption.style == "auto" and "blip" in caption.model.lower())
    text = (caption.prompt or "") if prefix else caption.instruction
    tokens = image_tokens + len(text.split()) * TOKENS_PER_WORD + caption.max_new_tokens
    return 2 * params * 1e9 * tokens * caption.num_beams / 1e12


def denoiser_tflop(family: str, resolution: int, context_pixels: int = 0) -> float:
    """TFLOP of one denoiser evaluation for an output of ``resolution`` px square."""
    if family in DENOISER_TFLOP_512:
        return DENOISER_TFLOP_512[family] * (resolution / 512) ** 2
    shape = DIT_SHAPES[family]
    tokens = (resolution**2 + context_pixels) / PIXELS_PER_TOKEN + shape.text_tokens
    return (2 * shape.token_weights_b * 1e9 * tokens + 4 * tokens**2 * shape.width * shape.layers) / 1e12


def tflop_per_image(edit: EditConfig) -> float:
    """TFLOP to render and score one image with ``edit``'s backend and settings (null settings take the
    backend's defaults; img2img and inpaint run steps x strength)."""
    editor = registry.backend(edit.backend)
    edit = editor.with_defaults(edit)
    evals = editor.denoising_steps(edit) * editor.denoiser_evals_per_step(edit)
    denoiser = evals * denoiser_tflop(editor.model_family(edit), edit.resolution, editor.context_pixels(edit))
    return denoiser + VAE_DECODE_TFLOP_512 * (edit.resolution / 512) ** 2 + 2 * CLIP_L14_TFLOP


def images_per_second(edit: EditConfig, gpu_type: str, measured: dict | None = None,
                      utilisation: float = DEFAULT_UTILISATION) -> tuple[float, str]:
    if measured and edit.backend in measured and gpu_type in measured[edit.backend]:
        return float(measured[edit.backend][gpu_type]), "measured (throughput file)"
    if gpu_type not in PEAK_TFLOPS:
        raise ValueError(f"unknown GPU type {gpu_type!r}; known: {', '.join(PEAK_TFLOPS)} (or give a throughput file)")
    tflop = tflop_per_image(edit)
    rate = PEAK_TFLOPS[gpu_type] * utilisation / tflop
    return rate, f"estimated from FLOPs, {tflop:,.0f} TFLOP per image, at {utilisation:.0%} of {PEAK_TFLOPS[gpu_type]:g} TFLOP/s"


JUDGE_TEXT_TOKENS = 60  # the chat template, the question and " Answer yes or no."


def judge_image_tokens(model: str, resolution: int) -> int | None:
    """Tokens one member image costs the judge: Qwen2.5-VL reads a token per 28 x 28 pixels of the image as
    given (the table's count is for a 1024 px seed), the fixed-grid models their table count."""
    params, tokens = CAPTIONERS.get(model, (None, None))
    if tokens is None:
        return None
    return round(tokens * (resolution / 1024) ** 2) if "qwen" in model.lower() else tokens


def judge_questions_per_candidate(loaded) -> dict[str, tuple[int, int]]:
    """axis -> (one-image questions, two-image questions) the judge asks about one candidate of that axis."""
    taxonomy, judge = loaded.taxonomy, loaded.config.filter.judge
    two_images = int(judge.thresholds.judge_scene is not None and "llava" not in (judge.model or "").lower())
    out = {}
    for axis in loaded.config.plan.axes:
        attributes = taxonomy.axes[axis].attributes
        out[axis] = (sum(len(taxonomy.attributes[a].values) for a in attributes) + 1, two_images)
    return out


def judge_cost(loaded, seeds: int, gpu_type: str) -> tuple[int, float | None, str]:
    """(questions, GPU-hours, how counted) of filter.judge's prefill for ``seeds``: one forward pass per
    question, 2 x parameters x tokens, as if every candidate passed the CLIP checks (the judge sees only those)."""
    config = loaded.config
    judge = config.filter.judge
    params = CAPTIONERS.get(judge.model or "", (None, None))[0]
    image_tokens = judge_image_tokens(judge.model or "", min(judge.image_side or config.edit.resolution,
                                                               config.edit.resolution))
    per_axis = judge_questions_per_candidate(loaded)
    candidates = config.plan.max_candidates()
    members = {axis: len(loaded.taxonomy.axis_value_combinations(axis)) for axis in config.plan.axes}
    questions = tokens = 0
    for axis, (single, double) in per_axis.items():
        n = seeds * members[axis] * candidates
        questions += n * (single + double)
        if image_tokens is not None:
            tokens += n * (single * (image_tokens + JUDGE_TEXT_TOKENS) + double * (2 * image_tokens + JUDGE_TEXT_TOKENS))
    if params is None or image_tokens is None:
        return questions, None, f"unknown size of {judge.model}"
    tflop = 2 * params * 1e9 * tokens / 1e12
    hours = tflop / (PEAK_TFLOPS[gpu_type] * DEFAULT_UTILISATION) / 3600
    return questions, hours, (f"prefill only, {tflop / max(questions, 1):.1f} TFLOP a question, if every candidate "
                              "passed the CLIP checks")


def load_throughput(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{backend: {{gpu_type: images_per_second}}}}")
    return data


def estimate(loaded, seeds: int, gpus: int, gpu_type: str, measured: dict | None = None,
             pass_rate: float | None = None) -> CostEstimate:
    edit = loaded.config.edit
    counts = plan_counts(loaded, seeds, pass_rate)
    rate, source = images_per_second(edit, gpu_type, measured)
    gpu_hours = counts["rendered_images"] / rate / 3600
    cost = CostEstimate(counts["rendered_images"], 1 / rate, source, gpu_hours, gpu_hours / max(gpus, 1), gpus)
    if loaded.config.input.kind != "generate":  # generate mode has no photos to caption
        cost.captions = seeds
        caption = loaded.config.caption
        if measured and gpu_type in measured.get("caption", {}):
            caption_rate, cost.caption_source = float(measured["caption"][gpu_type]), "measured (throughput file)"
        elif (tflop := caption_tflop(caption)) is not None:
            caption_rate = PEAK_TFLOPS[gpu_type] * DEFAULT_UTILISATION / tflop
            cost.caption_source = f"estimated from FLOPs, {tflop:.1f} TFLOP per seed"
        else:
            caption_rate = None
            cost.caption_source = (f"unknown size of {caption.model}: set caption.params_b and caption.image_tokens")
        if caption_rate is not None:
            cost.caption_gpu_hours = seeds / caption_rate / 3600
            cost.wall_hours = (gpu_hours + cost.caption_gpu_hours) / max(gpus, 1)
    if loaded.config.filter.judge.enabled and gpu_type in PEAK_TFLOPS:
        cost.judge_questions, cost.judge_gpu_hours, cost.judge_source = judge_cost(loaded, seeds, gpu_type)
        if cost.judge_gpu_hours is not None:
            cost.wall_hours += cost.judge_gpu_hours / max(gpus, 1)
    return cost


def describe_cost(cost: CostEstimate, gpu_type: str) -> str:
    lines = [
        f"cost on {cost.gpus} x {gpu_type}: {cost.images} images rendered at {1 / cost.seconds_per_image:.2f} images/s "
        f"per GPU ({cost.source})",
    ]
    if cost.captions and cost.caption_gpu_hours is not None:
        judge = cost.judge_gpu_hours or 0.0
        total = cost.gpu_hours + cost.caption_gpu_hours + judge
        lines += [
            f"  editor GPU-hours: {cost.gpu_hours:.2f}",
            f"  captioner GPU-hours: {cost.caption_gpu_hours:.2f} for {cost.captions} seeds "
            f"({cost.caption_gpu_hours / total:.1%} of the total; {cost.caption_source})",
        ]
        if cost.judge_questions:
            lines.append(f"  judge GPU-hours: {judge:.2f} for at most {cost.judge_questions} questions "
                         f"({judge / total:.1%} of the total; {cost.judge_source})" if cost.judge_gpu_hours is not None
                         else f"  judge: {cost.judge_questions} questions at most, not counted ({cost.judge_source})")
        lines.append(f"  GPU-hours: {total:.2f}   wall time: {cost.wall_hours:.2f} h (CLIP scoring adds a few percent)")
    else:
        captioning = f"captioning not counted: {cost.caption_source}" if cost.captions else "no captioning"
        judge = cost.judge_gpu_hours or 0.0
        if cost.judge_questions:
            lines.append(f"  judge GPU-hours: {judge:.2f} for at most {cost.judge_questions} questions ({cost.judge_source})")
        lines.append(f"  GPU-hours: {cost.gpu_hours + judge:.2f}   wall time: {cost.wall_hours:.2f} h ({captioning})")
    return "\n".join(lines)

"""GPU throughput of the production architectures, with random weights (FLOPs do not depend on them).

- ``ip2p``: InstructPix2Pix (SD 1.5 layout, 8-channel UNet) at 512 px and 20 steps, through the diffusers
  pipeline (the bare editor loop) and through counterfactory's editor stage on set rows, same batch;
- ``sdxl``: the SDXL text-to-image pipeline (generate mode's model family) at 1024 px and 30 steps;
- ``clip``: the open_clip ViT-L/14 image tower at 224 px.

For each batch size: images/s, achieved TFLOP/s from the cost model's FLOPs per image
(pipeline/commands/cost.py), and its share of the GPU's dense bf16 peak. ``--attention math`` swaps SDPA for
diffusers' plain attention, ``--compile`` compiles the UNet. Prints JSON; record the numbers in
benchmarks/RESULTS.md with the device and date.

    python benchmarks/gpu_editor.py [--models ip2p,sdxl,clip] [--batch-sizes 1,2,4,8,16] [--compile]

A CPU smoke run of the same code: ``--device cpu --resolution 64 --steps 1 --batch-sizes 1 --repeat 1``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import numpy as np  # noqa: E402
import common  # noqa: F401,E402  (puts the repository on sys.path, offline Hub)

from pipeline.commands.cost import CLIP_L14_TFLOP, PEAK_TFLOPS, tflop_per_image  # noqa: E402
from pipeline.testing.tiny_transformers import clip_tokenizer  # noqa: E402
from stages.edit.config import EditConfig  # noqa: E402


def clip_text_config(hidden: int, layers: int, heads: int, act: str, projection: int):
    from pipeline.testing.tiny_transformers import clip_text_config as config

    return config(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=heads,
                  num_hidden_layers=layers, hidden_act=act, projection_dim=projection)


def sd_vae(scaling_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2,
                         sample_size=512, scaling_factor=scaling_factor)


def build_ip2p():
    """timbrooks/instruct-pix2pix's architecture: SD 1.5 UNet with 8 input channels, SD VAE, CLIP ViT-L text."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(sample_size=64, in_channels=8, out_channels=4, cross_attention_dim=768)
    return StableDiffusionInstructPix2PixPipeline(
        unet=unet, vae=sd_vae(0.18215), text_encoder=CLIPTextModel(clip_text_config(768, 12, 12, "quick_gelu", 768)),
        tokenizer=clip_tokenizer(), scheduler=EulerAncestralDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl():
    """stabilityai/stable-diffusion-xl-base-1.0's architecture: 2.6B UNet, CLIP ViT-L and OpenCLIP bigG text."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    return StableDiffusionXLPipeline(
        unet=unet, vae=sd_vae(0.13025), text_encoder=CLIPTextModel(clip_text_config(768, 12, 12, "quick_gelu", 768)),
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(1280, 32, 20, "gelu", 1280)),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000),
    )


def prepare(pipe, device: str, dtype, attention: str, compile_unet: bool):
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = pipe.to(device, dtype)
    pipe.unet.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(device: str, fn, repeat: int) -> float:
    import torch

    best = float("inf")
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def rate(images: int, seconds: float, tflop: float, peak: float | None) -> dict:
    achieved = images * tflop / seconds
    return {"images_per_s": round(images / seconds, 3), "tflops": round(achieved, 1),
            "share_of_peak": round(achieved / peak, 3) if peak else None}


def editor_stage(pipe, args, batch: int):
    """counterfactory's InstructPix2Pix editor around ``pipe``: set rows in, a batch of ``batch`` images."""
    from schemas.records import SET, rows_to_table
    from stages.edit.instruct_pix2pix import InstructPix2PixEditor

    config = EditConfig(steps=args.steps, resolution=args.resolution, max_batch=batch, device=args.device,
                        dtype=args.dtype)
    editor = InstructPix2PixEditor(config)
    editor.device, editor.dtype, editor.pipe = args.device, pipe.unet.dtype, pipe
    seed = np.random.default_rng(0).integers(0, 255, (args.resolution, args.resolution, 3), dtype=np.uint8)
    members = [{"member_id": f"m{i}", "attributes": [], "phrase": f"person {i}", "target_caption": f"a person {i}",
                "instruction": f"make the person number {i}", "conversations": []} for i in range(batch)]
    row = {"seed_index": 0, "shard_index": 0, "source_uri": "bench", "seed_id": "bench", "image_rgb": seed.tobytes(),
           "width": args.resolution, "height": args.resolution, "status": "ok", "set_id": "bench-axis",
           "axis": "axis", "members": members, "candidate_seeds": [1]}
    table = rows_to_table([row], SET)
    return lambda: editor.process_rows(table.to_pylist())  # the model is already loaded: no start()


def bench_ip2p(args, peak, dtype) -> dict:
    from PIL import Image

    pipe = prepare(build_ip2p(), args.device, dtype, args.attention, args.compile)
    tflop = tflop_per_image(EditConfig(steps=args.steps, resolution=args.resolution)) - 2 * CLIP_L14_TFLOP
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (args.resolution,) * 2 + (3,), dtype=np.uint8))
    out = {"resolution": args.resolution, "steps": args.steps, "tflop_per_image": round(tflop, 2), "batches": []}
    for batch in args.batch_sizes:
        import torch

        def call():
            pipe(prompt=["turn the person into a chef"] * batch, image=[image] * batch, num_inference_steps=args.steps,
                 generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)], output_type="np")

        warm = timed(args.device, call, 1)  # first call: allocation, autotuning, compilation
        bare = timed(args.device, call, args.repeat)
        stage = timed(args.device, editor_stage(pipe, args, batch), args.repeat)
        out["batches"].append({"batch": batch, "first_call_s": round(warm, 2), "bare_pipeline": rate(batch, bare, tflop, peak),
                               "editor_stage": rate(batch, stage, tflop, peak),
                               "editor_stage_vs_bare": round(bare / stage, 3)})
    return out


def bench_sdxl(args, peak, dtype) -> dict:
    import torch

    resolution = args.sdxl_resolution or 2 * args.resolution
    steps = args.sdxl_steps or args.steps
    pipe = prepare(build_sdxl(), args.device, dtype, args.attention, args.compile)
    tflop = tflop_per_image(EditConfig(backend="text_to_image", model="sdxl", steps=steps,
                                       resolution=resolution)) - 2 * CLIP_L14_TFLOP
    out = {"resolution": resolution, "steps": steps, "tflop_per_image": round(tflop, 2), "batches": []}
    for batch in args.batch_sizes:
        def call():
            pipe(prompt=["a photo of a chef"] * batch, height=resolution, width=resolution, num_inference_steps=steps,
                 generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)], output_type="np")

        warm = timed(args.device, call, 1)
        out["batches"].append({"batch": batch, "first_call_s": round(warm, 2),
                               **rate(batch, timed(args.device, call, args.repeat), tflop, peak)})
    return out


def bench_clip(args, peak, dtype) -> dict:
    import open_clip
    import torch

    model = open_clip.create_model("ViT-L-14", pretrained=None).to(args.device, dtype).eval()
    out = {"model": "ViT-L-14", "resolution": 224, "tflop_per_image": CLIP_L14_TFLOP, "batches": []}
    for batch in args.clip_batch_sizes:
        pixels = torch.randn(batch, 3, 224, 224, device=args.device, dtype=dtype)

        def call():
            with torch.inference_mode():
                model.encode_image(pixels)

        timed(args.device, call, 1)
        out["batches"].append({"batch": batch, **rate(batch, timed(args.device, call, args.repeat), CLIP_L14_TFLOP, peak)})
    return out


def device_peak(device: str) -> tuple[str, float | None]:
    import torch

    if not device.startswith("cuda"):
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    peak = next((value for key, value in PEAK_TFLOPS.items() if key in name.lower()), None)
    return name, peak


def main() -> int:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="ip2p,sdxl,clip")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "math"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16")
    parser.add_argument("--clip-batch-sizes", default="32,128,512")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sdxl-resolution", type=int, default=None)  # default: twice --resolution
    parser.add_argument("--sdxl-steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.clip_batch_sizes = [int(b) for b in args.clip_batch_sizes.split(",")]
    dtype = getattr(torch, args.dtype)
    name, peak = device_peak(args.device)
    result = {"benchmark": "gpu_editor", "device": name, "peak_tflops": peak, "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "dtype": args.dtype, "attention": args.attention, "compile": args.compile}
    benches = {"ip2p": bench_ip2p, "sdxl": bench_sdxl, "clip": bench_clip}
    for model in args.models.split(","):
        torch.manual_seed(0)
        result[model] = benches[model](args, peak, dtype)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["target"] = "editor >= 0.5 of the bf16 peak at its best batch size; pipeline >= 0.9 of the bare editor loop"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

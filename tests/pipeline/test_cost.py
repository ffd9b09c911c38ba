import json
import subprocess
import sys

import pytest

from pipeline.config.loading import load_config
from pipeline.commands.cost import estimate, images_per_second, tflop_per_image
from stages.edit.config import EditConfig
from tests.conftest import REPO


def edit(backend: str, steps: int | None, resolution: int, **extra) -> EditConfig:
    return EditConfig(backend=backend, steps=steps, resolution=resolution, **extra)


def test_flops_per_edit_follow_the_reference_costs():
    # 20 steps x 3 UNet evaluations x 0.85 TFLOP + 2.5 VAE decode + 2 x 0.16 CLIP
    assert tflop_per_image(edit("instruct_pix2pix", 20, 512)) == pytest.approx(53.82)
    assert tflop_per_image(edit("instruct_pix2pix", 20, 1024)) == pytest.approx(4 * 53.5 + 0.32)
    rate, source = images_per_second(edit("instruct_pix2pix", 20, 512), "h100")
    assert rate == pytest.approx(800 * 0.3 / 53.82) and "estimated" in source


def test_production_cost_by_hand():
    loaded = load_config(REPO / "configs" / "production.yaml")
    cost = estimate(loaded, seeds=1000, gpus=8, gpu_type="h100")
    images = 1000 * (2 + 6 + 3 + 5 + 12 + 10 + 30) * 4
    assert cost.images == images
    # FLUX.2 klein 4B distilled at 1024 px: 4 steps x one evaluation, decode, two CLIP passes
    klein = 4 * dit_eval(3.07, 3072, 25, 4096 + 4096 + 512) + 4 * 2.5 + 0.32
    assert cost.gpu_hours == pytest.approx(images / (240 / klein) / 3600)
    assert cost.gpu_hours == pytest.approx(100, rel=0.01)  # what the config's comment says
    measured = estimate(loaded, seeds=1000, gpus=8, gpu_type="h100",
                        measured={"flux2_klein": {"h100": 10.0}, "caption": {"h100": 20.0}})
    assert measured.gpu_hours == pytest.approx(images / 10 / 3600)
    assert measured.caption_gpu_hours == pytest.approx(1000 / 20 / 3600)
    assert measured.wall_hours == pytest.approx((images / 10 + 1000 / 20) / 3600 / 8 + judge_hours(1000, 240) / 8)


def test_plan_prints_the_cost_with_a_throughput_file(tmp_path):
    throughput = tmp_path / "throughput.json"
    throughput.write_text(json.dumps({"flux2_klein": {"a100": 2.0}}))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "plan", "configs/production.yaml", "--seeds", "100", "--gpus", "4",
         "--gpu-type", "a100", "--throughput", str(throughput)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "27200 images rendered at 2.00 images/s per GPU (measured (throughput file))" in result.stdout
    # + captioning 100 seeds at 23.04 TFLOP each (test_captioning_cost_by_hand) at 0.3 x 312 TFLOP/s: 0.0068 h
    assert "editor GPU-hours: 3.78" in result.stdout and "captioner GPU-hours: 0.01 for 100 seeds" in result.stdout
    # + the judge's prefill for 100 seeds (test_the_judges_prefill_by_hand_for_production) at 93.6 TFLOP/s: 4.63 h
    assert judge_hours(100, 0.3 * 312) == pytest.approx(4.627, abs=0.001)
    assert "judge GPU-hours: 4.63" in result.stdout
    assert "GPU-hours: 8.41   wall time: 2.10 h" in result.stdout


def dit_eval(token_weights_b, width, layers, tokens):
    """One DiT evaluation by hand: 2 x weights x tokens + 4 x tokens^2 x width x layers (docs/references.md)."""
    return (2 * token_weights_b * 1e9 * tokens + 4 * tokens**2 * width * layers) / 1e12


def test_flops_per_image_by_backend_and_model_family():
    # text_to_image: 2 evaluations per step; SDXL's UNet is ~2x SD 1.5's per pixel; at 1024 px 4x the pixels
    assert tflop_per_image(edit("text_to_image", 50, 512)) == pytest.approx(50 * 2 * 0.85 + 2.5 + 0.32)
    assert tflop_per_image(edit("text_to_image", 30, 1024, model="stabilityai/sdxl-base-1.0")) == pytest.approx(
        30 * 2 * 6.7 + 4 * 2.5 + 0.32)
    decode_and_clip = 4 * 2.5 + 0.32  # at 1024 px
    # FLUX.1 Kontext at 1024 px: 4,096 output + 4,096 context + 512 T5 tokens, 57 blocks of 3072, 28 steps
    kontext = tflop_per_image(edit("flux_kontext", None, 1024))
    assert kontext == pytest.approx(28 * dit_eval(6.45, 3072, 57, 8704) + decode_and_clip)
    assert kontext == pytest.approx(4650, rel=0.02)  # docs/references.md: ~4,650
    # FLUX.2 klein 4B distilled: 4 steps, one evaluation each, 25 blocks of 3072, Qwen3 at 512 tokens
    klein = tflop_per_image(edit("flux2_klein", None, 1024, model="black-forest-labs/FLUX.2-klein-4B"))
    assert klein == pytest.approx(4 * dit_eval(3.07, 3072, 25, 8704) + decode_and_clip)
    assert klein == pytest.approx(330, rel=0.05)  # docs/references.md: ~330
    base = tflop_per_image(edit("flux2_klein", None, 1024, model="black-forest-labs/FLUX.2-klein-base-4B"))
    assert base == pytest.approx(50 * 2 * dit_eval(3.07, 3072, 25, 8704) + decode_and_clip)
    assert base == pytest.approx(7700, rel=0.05)  # docs/references.md: ~7,700
    # Qwen-Image-Edit-2511: 40 steps x 2 (true CFG), 60 blocks; the context is ~1 MP at any output size
    qwen = tflop_per_image(edit("qwen_image_edit", None, 1024, max_batch=1))
    assert qwen == pytest.approx(80 * dit_eval(6.8, 3072, 60, 4096 + 4096 + 236) + decode_and_clip)
    assert qwen == pytest.approx(13400, rel=0.02)  # docs/references.md: ~13,400
    assert qwen / klein == pytest.approx(40, rel=0.1)  # "roughly 40x klein's FLOPs per image"
    qwen_512 = tflop_per_image(edit("qwen_image_edit", None, 512, max_batch=1))
    assert qwen_512 == pytest.approx(80 * dit_eval(6.8, 3072, 60, 1024 + 4096 + 236) + 2.5 + 0.32)
    assert qwen_512 > qwen / 2  # not a quarter: the context image keeps its 4,096 tokens


def test_generate_mode_counts_the_base_images_and_img2img_only_its_strength_of_steps():
    from pipeline.commands.plan import plan_counts
    from stages.edit.img2img import Img2ImgEditor

    loaded = load_config(REPO / "configs" / "generate_sd15.yaml")
    counts = plan_counts(loaded, seeds=10)
    members = 12 + 10 + 30  # race_gender, physical_gender, physical_race: one call each with its base
    assert counts["edited_images"] == 10 * members
    assert counts["rendered_images"] == 10 * (members + 3) and counts["editor_pipeline_calls"] == 10 * 3
    img2img = load_config(REPO / "configs" / "mini.yaml", {"edit.backend": "img2img", "edit.steps": 20,
                                                          "edit.strength": 0.6}).config.edit
    assert Img2ImgEditor.denoising_steps(img2img) == 12


def test_captioning_cost_by_hand():
    # Qwen2.5-VL-7B: 8.29B parameters; 1,300 image tokens + the default instruction's 32 words x 1.3 + 48 new
    # tokens, one beam: 2 x 8.29e9 x 1,389.6 = 23.04 TFLOP per seed, at 240 TFLOP/s sustained on an H100
    loaded = load_config(REPO / "configs" / "production.yaml")
    cost = estimate(loaded, seeds=1000, gpus=8, gpu_type="h100")
    assert cost.captions == 1000
    assert cost.caption_gpu_hours == pytest.approx(1000 * 2 * 8.29 * 1389.6 / 1000 / 240 / 3600, rel=1e-6)
    assert cost.wall_hours == pytest.approx((cost.gpu_hours + cost.caption_gpu_hours + judge_hours(1000, 240)) / 8)
    blip = load_config(REPO / "configs" / "production.yaml", {"caption.model": "Salesforce/blip-image-captioning-large",
                                                               "caption.num_beams": 3, "caption.max_new_tokens": 30,
                                                               "filter.judge.model": "Qwen/Qwen2.5-VL-7B-Instruct"})
    # BLIP-large: 0.47B, 577 image tokens, no prefix, 30 new tokens, 3 beams
    assert estimate(blip, 1000, 8, "h100").caption_gpu_hours == pytest.approx(
        1000 * 2 * 0.47 * (577 + 30) * 3 / 1000 / 240 / 3600, rel=1e-6)
    unknown = load_config(REPO / "configs" / "production.yaml", {"caption.model": "someone/new-vlm"})
    assert estimate(unknown, 1000, 8, "h100").caption_gpu_hours is None
    sized = load_config(REPO / "configs" / "production.yaml", {"caption.model": "someone/new-vlm",
                                                                "caption.params_b": 2.0, "caption.image_tokens": 729})
    assert estimate(sized, 1000, 8, "h100").caption_gpu_hours == pytest.approx(
        1000 * 2 * 2.0 * (729 + 32 * 1.3 + 48) / 1000 / 240 / 3600, rel=1e-6)
    assert estimate(load_config(REPO / "configs" / "generate_sd15.yaml"), 10, 8, "h100").captions == 0


# Per candidate of production.yaml: one question per value of each attribute of the axis, the concept, the scene
# (two images). Members x 4 candidates, one-image questions: gender 8 x 3, race 24 x 7, age 12 x 4,
# physical 20 x 6, race_gender 48 x 9, physical_gender 40 x 8, physical_race 120 x 12
PRODUCTION_JUDGING = [(8, 3), (24, 7), (12, 4), (20, 6), (48, 9), (40, 8), (120, 12)]


def judge_hours(seeds: int, tflops: float) -> float:
    """Qwen2.5-VL-7B (8.29B) sees a 448 px image as 1,300 x (448/1024)^2 = 249 tokens, + 60 of text."""
    tokens = seeds * sum(n * (single * (249 + 60) + (2 * 249 + 60)) for n, single in PRODUCTION_JUDGING)
    return 2 * 8.29e9 * tokens / 1e12 / tflops / 3600


def test_the_judges_prefill_by_hand_for_production():
    loaded = load_config(REPO / "configs" / "production.yaml")
    cost = estimate(loaded, seeds=1000, gpus=8, gpu_type="h100")
    assert cost.judge_questions == 1000 * sum(n * (single + 1) for n, single in PRODUCTION_JUDGING) == 2_824_000
    assert cost.judge_gpu_hours == pytest.approx(judge_hours(1000, 240))
    assert cost.judge_gpu_hours / cost.gpu_hours == pytest.approx(0.181, abs=0.001)  # against the editor's

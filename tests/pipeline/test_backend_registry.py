"""A sixth edit backend, declared in this test module alone and registered with one line, goes through
config checks, ``plan`` and a whole run: adding a backend needs nothing outside its module and the registry."""

import io
import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.commands.cost import estimate
from pipeline.commands.plan import describe, plan_counts
from pipeline.config.errors import ConfigError
from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from stages.edit import registry
from stages.edit.base import Editor
from stages.utils.imaging import square_crop
from tests.conftest import REPO
from tests.helpers import read_output_sets


class TintEditor(Editor):
    """Each member is the seed crop averaged with one colour drawn from its candidate's noise seed."""

    backend = "tint"
    summary = "tint the seed crop (a test backend)"

    @classmethod
    def denoiser_evals_per_step(cls, edit) -> int:
        return 1

    @classmethod
    def config_problems(cls, config):
        found = super().config_problems(config)
        if config.edit.max_batch > 64:
            found.append(("edit.max_batch", "tint paints at most 64 images a call"))
        return found

    @classmethod
    def generation_settings(cls, config) -> dict:
        return {"tint_mix": 0.5}

    def load(self):
        return "no weights"

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        seed = np.asarray(source, dtype=np.float32)
        colours = [np.random.default_rng(job["noise_seed"]).uniform(0, 255, 3) for job in jobs]
        return [((seed + colour) / 2).astype(np.uint8) for colour in colours]


@pytest.fixture
def tint_backend():
    registry.register(TintEditor)
    yield
    del registry.BACKENDS["tint"]


def mini(**overrides):
    return load_config(REPO / "configs" / "mini.yaml",
                       {"input.path": str(REPO / "configs" / "mini_seeds"), "edit.backend": "tint", **overrides})


def test_an_unregistered_backend_is_refused_naming_the_registered_ones():
    with pytest.raises(ConfigError) as error:
        mini()
    assert "edit.backend" in str(error.value) and "'tint'" in str(error.value)
    assert "instruct_pix2pix, img2img, inpaint, flux_kontext, flux2_klein, qwen_image_edit, text_to_image" in str(error.value)


def test_a_registered_backend_is_checked_planned_and_run(tint_backend, tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="edit.max_batch: tint paints at most 64 images a call"):
        mini(**{"edit.max_batch": 65})
    with pytest.raises(ConfigError, match="input.kind generate has no seed photos"):
        mini(**{"input.kind": "generate"})

    loaded = mini()
    text, seeds = describe(loaded)
    assert "[tint]" in text and seeds == 7
    counts = plan_counts(loaded, seeds=10)
    # mini: gender (2 members) and race_gender (3 x 2) axes, 2 candidates each, max_batch 8, 3 steps
    assert counts["edited_images"] == 10 * (2 + 6) * 2
    assert counts["editor_pipeline_calls"] == 10 * (1 + 2)
    assert counts["unet_evaluations"] == 10 * 16 * 3 * 1
    assert estimate(loaded, 10, 1, "h100").images == 160

    out = tmp_path / "out"
    result = run_local(loaded, str(out), limit=3)
    assert result.stages["edit"].counters["images_rendered"] > 0
    assert verify_output(str(out))[0] == []
    sets = read_output_sets(out)
    assert sets
    for sample in sets.values():
        meta = sample["meta"]
        assert meta["generation"]["backend"] == "tint" and meta["generation"]["tint_mix"] == 0.5
    check_members_are_the_tinted_seed_crop(out, side=64)  # mini.yaml's edit.resolution


def check_members_are_the_tinted_seed_crop(out, side: int):
    """Read with plain webdataset: every member is the seed crop (the set sample's src.jpg, cropped as editors
    get it) averaged with its noise seed's colour, within JPEG noise, and far from the crop itself, which is
    what a backend that painted nothing would hand back (measured: 0.96-1.59 from the tint, 26.9-57.1 from the
    crop, mean absolute difference over 0-255)."""
    sources = {s["__key__"]: json.loads(s["json"]) | {"src": s["jpg"]}
               for s in wds.WebDataset(sorted(str(p) for p in (out / "sets").glob("*.tar")), shardshuffle=False)}
    members = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False))
    assert members and len(members) == sum(len(s["members"]) for s in sources.values())
    for sample in members:
        meta = json.loads(sample["json"])
        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
        assert image.size == (side, side)
        crop = np.asarray(square_crop(Image.open(io.BytesIO(sources[meta["set_id"]]["src"])).convert("RGB"), side),
                          dtype=np.float64)
        colour = np.random.default_rng(meta["noise_seed"]).uniform(0, 255, 3)
        pixels = np.asarray(image, dtype=np.float64)
        assert np.abs(pixels - (crop + colour) / 2).mean() < 4, meta["key"]
        assert np.abs(pixels - crop).mean() > 15, meta["key"]

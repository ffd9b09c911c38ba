"""Every photo edit backend end to end from a config, through the run's stages and writer in one process (the
local executor; generate mode through Ray is test_generate_run.py)."""


import json

import pyarrow.parquet as pq
import pytest

from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from schemas.sample import member_errors, set_errors
from tests.conftest import REPO
from tests.helpers import read_output_sets


def run_in_process(config_path, overrides: dict, out, limit: int | None = None) -> None:
    """The run's stages in order in this process (the local executor), then the shard writer."""
    run_local(load_config(config_path, overrides), str(out), limit=limit)


MASK = {"edit.mask.model": "tiny:clipseg", "edit.mask.threshold": 0.3, "edit.mask.dilate": 2}
# name -> (backend, overrides, seeds listed): the mini config with each backend's tiny model
PHOTO_RUNS = {
    "img2img": ("img2img", {"edit.model": "tiny:stable-diffusion", "edit.strength": 0.6}, None),
    "inpaint": ("inpaint", {"edit.model": "tiny:stable-diffusion-inpaint", **MASK}, None),
    "flux_kontext": ("flux_kontext", {"edit.model": "tiny:flux-kontext", "edit.guidance_scale": 2.5,
                                      "edit.max_sequence_length": 32}, None),
    # one image a call, and the tiny pipeline still VAE-encodes a 1 MP context: two seeds and broken.jpg
    "qwen_image_edit": ("qwen_image_edit", {"edit.model": "tiny:qwen-image-edit", "edit.max_batch": 1,
                                            "edit.guidance_scale": None, "plan.axes": ["gender"],
                                            "plan.candidates_per_set": 1}, 3),
    # keep_background on any photo backend: here the production default's
    "flux2_klein+keep_background": ("flux2_klein", {"edit.model": "tiny:flux2-klein", "edit.guidance_scale": None,
                                                    "edit.keep_background": True, **MASK}, None),
}


@pytest.mark.parametrize("name", sorted(PHOTO_RUNS))
def test_each_photo_backend_runs_the_mini_config_end_to_end(name, tiny_cache, tmp_path):
    backend, settings, limit = PHOTO_RUNS[name]
    out = tmp_path / "out"
    overrides = {"edit.backend": backend, "input.path": str(REPO / "configs" / "mini_seeds"), **settings}
    run_in_process(REPO / "configs" / "mini.yaml", overrides, out, limit)
    assert verify_output(str(out))[0] == []
    rows = pq.read_table(out / "manifest").to_pylist()
    assert {r["status"] for r in rows} >= {"accepted", "error"}  # broken.jpg is recorded, not lost
    found = read_output_sets(out)
    assert found
    for sample in found.values():
        meta = sample["meta"]
        assert set_errors(meta) == [] and meta["generation"]["backend"] == backend
        assert meta["source"]["generated"] is False
        assert all(member_errors(m["meta"]) == [] and m["jpg"] for m in sample["members"].values())
    stats = json.loads((out / "stats.json").read_text())
    rendered = stats["stage_work"]["edit"]["images_rendered"]
    kept = backend == "inpaint" or settings.get("edit.keep_background", False)
    assert meta["generation"]["keep_background"] is kept
    assert stats["stage_work"]["edit"].get("backgrounds_kept", 0) == (rendered if kept else 0)
    if kept:
        assert meta["models"]["segmenter"].endswith("clipseg")
        assert meta["generation"]["mask"]["dilate"] == 2
    if backend == "flux2_klein":  # the backend's own defaults: distilled, 4 steps... but mini.yaml says 3
        assert (meta["generation"]["steps"], meta["generation"]["guidance_scale"]) == (3, 1.0)
        assert meta["generation"]["identity_clause"] == "Keep the same face shape, clothing, pose and background."
    if backend == "qwen_image_edit":
        assert meta["generation"]["true_cfg_scale"] == 4.0 and meta["generation"]["negative_prompt"] == " "
        assert rendered == 2 * 2  # two decodable seeds x male, female; one image a call

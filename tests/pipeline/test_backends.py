"""Every edit backend end to end from a config: generate mode through Ray (the shipped
configs/mini_generate.yaml), the photo backends through the same stages and writer in one process."""


import json

import pyarrow.parquet as pq
import pytest

from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from schemas.sample import member_errors, set_errors
from stages.utils.provenance import read_provenance
from tests.conftest import REPO
from tests.helpers import read_output_sets


@pytest.fixture(scope="module")
def generated(mini_generate_output):
    return mini_generate_output


def test_generate_mode_output_passes_verify_and_accounts_for_every_planned_candidate(generated):
    problems, _ = verify_output(str(generated))
    assert problems == []
    rows = pq.read_table(generated / "manifest").to_pylist()
    # 2 concepts x 2 prompts = 4 seeds; gender (2 members) + race_gender (6) per seed; 2 candidates each
    assert len(rows) == 4 * (2 + 6) * 2
    assert {r["seed_id"] for r in rows} == {f"{c}-p{t}-0" for c in ("chef", "science") for t in (0, 1)}
    assert all(r["caption"] in ("a photo of a chef", "a picture of a chef at work", "a photo of a scientist",
                                "a picture of a scientist at work") or "science" in r["seed_id"] for r in rows)
    for r in rows:
        assert 7.5 <= r["guidance_scale"] <= 15.0 and 0.1 <= r["p2p_fraction"] <= 0.9
        assert r["captioner"] is None
    # early rejection ran in the edit actors: stopped members are rejected rows with the reason
    stopped = [r for r in rows if (r["reason"] or "").startswith("early rejection after 2 of 4 steps: ")]
    assert stopped and all(r["status"] == "rejected" and r["shard"] is None for r in stopped)
    assert any(r["status"] == "accepted" for r in rows)


def test_generated_samples_keep_one_candidate_set_and_say_the_base_is_generated(generated):
    found = read_output_sets(generated)
    assert found
    for sample in found.values():
        meta, members = sample["meta"], [m["meta"] for m in sample["members"].values()]
        assert set_errors(meta) == [] and all(member_errors(m) == [] for m in members)
        assert meta["source"]["generated"] is True and meta["models"]["captioner"] is None
        assert len({m["candidate"] for m in members}) == 1  # a whole candidate set
        assert len({(m["guidance_scale"], m["p2p_fraction"]) for m in members}) == 1
        assert meta["generation"]["p2p"]["cross_attention"] is True
        source = read_provenance(sample["src"])
        assert source["synthetic"] and source["record"]["role"] == "base"
        assert source["record"]["base_prompt"] == meta["source"]["caption"]


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

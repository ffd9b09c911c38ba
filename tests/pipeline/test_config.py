import subprocess
import sys

import pytest
import yaml

from pipeline.config.loading import load_config, parse_config
from pipeline.config.errors import ConfigError
from tests.conftest import REPO

CONFIGS = REPO / "configs"


def mini_data() -> dict:
    return yaml.safe_load((CONFIGS / "mini.yaml").read_text())


def parse(data):
    return parse_config(data, "test.yaml", CONFIGS)


@pytest.mark.parametrize("name", ["mini.yaml", "mini_generate.yaml", "production.yaml", "generate_sd15.yaml",
                                  "generate_sdxl.yaml"])
def test_shipped_configs_validate(name):
    loaded = load_config(CONFIGS / name)
    assert loaded.config.plan.axes
    assert len(loaded.config_hash) == 16


def test_production_config_names_real_models_on_gpus():
    config = load_config(CONFIGS / "production.yaml").config
    assert config.filter.safety.enabled and config.shards.provenance.watermark
    assert (config.edit.backend, config.edit.model) == ("flux2_klein", "black-forest-labs/FLUX.2-klein-4B")
    assert (config.edit.steps, config.edit.guidance_scale) == (4, 1.0)  # the distilled model's, filled at load
    assert config.edit.keep_background and config.edit.preserve_identity and config.edit.resolution == 1024
    assert config.caption.model == "Qwen/Qwen2.5-VL-7B-Instruct" and config.caption.style == "auto"  # a chat VLM
    assert config.filter.model == "ViT-L-14"
    assert config.edit.resources.num_gpus >= 1 and config.caption.resources.num_gpus > 0


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        (("edit", "steps"), "twenty", "edit.steps", "expected an integer"),
        (("edit", "colour"), 1, "edit.colour", "unknown key; allowed:"),
        (("edit", "dtype"), "float8", "edit.dtype", "allowed: float32, float16, bfloat16"),
        (("plan", "axes"), ["gender", "religion"], "plan.axes[1]", "unknown axis 'religion'; allowed: gender"),
        (("restrict_values",), {"race": ["white", "martian"]}, "restrict_values.race[1]", "unknown value 'martian'"),
        (("plan", "default_concept"), "astronaut", "plan.default_concept", "unknown concept"),
        (("filter", "thresholds", "directional"), "high", "filter.thresholds.directional", "expected a number or null"),
        (("edit", "resolution"), 100, "edit.resolution", "multiple of 8"),
        (("edit", "resources", "num_gpus"), -1, "edit.resources.num_gpus", ">= 0"),
        (("edit", "resources", "tasks_in_flight"), 0, "edit.resources.tasks_in_flight", "1 for GPU stages"),
        (("ray", "seeds_in_flight"), 16, "ray.seeds_in_flight", "must be >= 32, one input block"),
        (("ray", "fuse"), [["sets", "edit"], ["captions", "concept"]], "ray.fuse[1]",
         "unknown stage 'captions'; allowed, in order: ingest, caption, concept, screen, sets, edit, filter, encode"),
        (("ray", "fuse"), [["caption", "sets"]], "ray.fuse[0]", "next to each other, in the run's order"),
        (("ray", "fuse"), [["filter", "edit"]], "ray.fuse[0]", "next to each other, in the run's order"),
        (("ray", "fuse"), [["edit", "filter"], ["filter", "encode"]], "ray.fuse[1]", "in one group only"),
        (("ray", "fuse"), [["edit"]], "ray.fuse[0]", "two or more stages"),
        (("ray", "fuse"), ["edit", "filter"], "ray.fuse[0]", "expected a list"),
        (("filter", "safety"), {"enabled": True, "threshold": 2}, "filter.safety.threshold", "between 0 and 1"),
        (("shards", "provenance"), {"watermark": True}, "shards.provenance.watermark", "edit.resolution >= 256"),
        (("shards", "provenance"), {"watermark_text": "é"}, "shards.provenance.watermark_text", "ASCII"),
        (("edit", "backend"), "dall-e", "edit.backend", "allowed: instruct_pix2pix, img2img, inpaint, flux_kontext"),
        (("edit", "backend"), "text_to_image", "input.kind", "use input.kind generate"),
        (("edit", "strength"), 0, "edit.strength", "(0, 1]"),
        (("edit", "guidance_range"), [7.5, 15], "edit.guidance_range", "only the text_to_image backend"),
        (("edit", "p2p"), {"fraction_range": [0.9, 0.1]}, "edit.p2p.fraction_range", "low <= high"),
        (("edit", "mask"), {"threshold": 1.5}, "edit.mask.threshold", "(0, 1)"),
        (("edit", "early_rejection"), {"enabled": True}, "edit.early_rejection.enabled", "only the text_to_image backend"),
        # mini.yaml's guidance 7.5 and 8 images a call do not fit these backends
        (("edit", "backend"), "flux2_klein", "edit.guidance_scale", "ignores guidance: leave it null or 1.0"),
        (("edit", "backend"), "qwen_image_edit", "edit.max_batch", "takes at most 1 image(s) a call (got 8)"),
        (("edit", "negative_prompt"), "blurry", "edit.negative_prompt",
         "instruct_pix2pix takes no negative prompt; allowed with: qwen_image_edit"),
        (("filter", "identity_rank_by"), "directional", "filter.identity_rank_by", "has no directional score"),
        (("input", "people"), "one", "input.people", "one needs the seed screen"),
        (("filter", "judge"), {"thresholds": {"judge_concept": 5.0}}, "filter.judge.thresholds.judge_concept",
         "must be in [0, 1]"),
        (("filter", "judge"), {"concept_question": "Is {a_concept} {x}?"}, "filter.judge.concept_question",
         "no placeholder but {a_concept}"),
        (("filter", "drift"), {"record_only_attributes": ["races"]}, "filter.drift.record_only_attributes[0]",
         "unknown attribute 'races'"),
    ],
)
def test_bad_values_fail_naming_the_field(path, value, field, words):
    data = mini_data()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith("test.yaml: ")


def test_config_hash_ignores_resources_but_not_what_changes_pixels():
    base = parse(mini_data()).config_hash
    data = mini_data()
    data["edit"]["resources"]["actors"] = 4
    data["encode"] = {"resources": {"actors": 3}}  # a section of resources only: a config without it hashes alike
    data["run"]["output"] = "elsewhere"
    assert parse(data).config_hash == base
    del data["encode"]
    assert parse(data).config_hash == base
    data["edit"]["steps"] = 5
    assert parse(data).config_hash != base


def test_the_encode_stage_resources_moved_out_of_shards_say_where_they_went():
    data = mini_data()
    data["shards"]["resources"] = data.pop("encode")["resources"]
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.field == "shards.resources" and "moved to encode.resources" in str(err.value)


def test_cli_reports_a_config_error_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    data = mini_data()
    data["taxonomy"] = str(CONFIGS / "taxonomy.yaml")
    data["plan"]["axes"] = ["gender", "religion"]
    bad.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "pipeline", "plan", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "plan.axes[1]" in lines[0] and "Traceback" not in result.stderr


def generate_data() -> dict:
    return yaml.safe_load((CONFIGS / "mini_generate.yaml").read_text())


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        (("edit", "backend"), "instruct_pix2pix", "edit.backend", "use backend text_to_image"),
        (("input", "prompts"), ["a photo of a female {concept}"], "input.prompts[0]", "protected attribute word"),
        (("input", "prompts"), ["a photo of {job}"], "input.prompts[0]", "unknown placeholder(s) ['job']"),
        (("input", "prompts"), ["a photo"], "input.prompts[0]", "must contain {concept} or {a_concept}"),
        (("input", "seeds_per_prompt"), 0, "input.seeds_per_prompt", ">= 1"),
        (("edit", "max_batch"), 1, "edit.max_batch", "a base image and at least one member"),
        (("ray", "fuse"), [["ingest", "edit"]], "ray.fuse[0]",
         "next to each other, in the run's order: ingest, sets, edit, filter, encode"),
        (("edit", "early_rejection"), {"enabled": True, "at_fraction": 1.0}, "edit.early_rejection.at_fraction", "(0, 1)"),
        (("filter", "thresholds"), {"text_image": None, "directional": None, "image_image": None, "attribute_margin": None},
         "edit.early_rejection.enabled", "every one is off"),
    ],
)
def test_generate_mode_config_errors_name_the_field(path, value, field, words):
    data = generate_data()
    if path != ("filter", "thresholds"):  # (only text_to_image may draw guidance or stop early: their own errors)
        data["edit"].pop("guidance_range")
        data["edit"].pop("early_rejection")
    data[path[0]][path[1]] = value
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.field == field and words in str(err.value)


def test_a_config_without_ray_fuse_runs_each_stage_in_a_pool_of_its_own():
    """Fused groups are a laptop's choice, never a default: the production config and a config that leaves ray.fuse
    out give each stage its own actor pool (on a cluster each has a device of its own)."""
    from pipeline.execution.provenance import provenance
    from pipeline.execution.stage_list import stage_specs
    from pipeline.execution.stage_pools import stage_pools

    data = mini_data()
    del data["ray"]["fuse"]
    mini = ["ingest", "caption", "concept", "sets", "edit", "filter", "encode"]
    production = ["ingest", "caption", "concept", "screen", "sets", "edit", "filter", "encode"]  # its judge screens
    for loaded, names in ((parse(data), mini), (load_config(CONFIGS / "production.yaml"), production)):
        pools = stage_pools(stage_specs(loaded.config, loaded.taxonomy, provenance(loaded)), loaded.config.ray.fuse)
        assert [pool.name for pool in pools] == names


def test_a_fused_group_leaves_out_the_stages_a_run_does_not_have():
    """mini.yaml fuses [ingest, caption, concept]: with no concept model the run has no concept stage, and the group
    keeps ingest and caption; generate mode has no caption either, and ingest goes on with the planner's group."""
    from pipeline.execution.provenance import provenance
    from pipeline.execution.stage_list import stage_specs
    from pipeline.execution.stage_pools import stage_pools

    data = mini_data()
    data["concept"]["model"] = None
    loaded = parse(data)
    pools = stage_pools(stage_specs(loaded.config, loaded.taxonomy, provenance(loaded)), loaded.config.ray.fuse)
    assert [pool.name for pool in pools] == ["ingest+caption", "sets+edit+filter+encode"]
    data = generate_data()
    data["ray"]["fuse"] = [["ingest", "caption", "concept"], ["sets", "edit"]]
    loaded = parse(data)
    pools = stage_pools(stage_specs(loaded.config, loaded.taxonomy, provenance(loaded)), loaded.config.ray.fuse)
    assert [pool.name for pool in pools] == ["ingest", "sets+edit", "filter", "encode"]


def test_the_judge_is_not_taken_from_a_captioner_that_cannot_chat():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "production.yaml", {"caption.model": "Salesforce/blip-image-captioning-large"})
    assert err.value.field == "filter.judge.model" and "is not a chat VLM" in str(err.value)
    judged = load_config(CONFIGS / "production.yaml").config.filter.judge
    assert (judged.model, judged.revision) == ("Qwen/Qwen2.5-VL-7B-Instruct", "main")  # the captioner's, pinned

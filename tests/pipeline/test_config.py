import subprocess
import sys

import pytest
import yaml

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from tests.conftest import REPO

CONFIGS = REPO / "configs"


def mini_data() -> dict:
    return yaml.safe_load((CONFIGS / "mini.yaml").read_text())


def parse(data):
    return parse_config(data, "test.yaml", CONFIGS)


@pytest.mark.parametrize("name", ["mini.yaml", "production.yaml"])
def test_shipped_configs_validate(name):
    loaded = load_config(CONFIGS / name)
    assert loaded.config.plan.axes
    assert len(loaded.config_hash) == 16


def test_production_config_names_real_models_on_gpus():
    config = load_config(CONFIGS / "production.yaml").config
    assert config.filter.safety.enabled and config.shards.provenance.watermark
    assert config.edit.model == "timbrooks/instruct-pix2pix"
    assert "blip" in config.caption.model.lower()
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
        (("filter", "safety"), {"enabled": True, "threshold": 2}, "filter.safety.threshold", "between 0 and 1"),
        (("shards", "provenance"), {"watermark": True}, "shards.provenance.watermark", "edit.resolution >= 256"),
        (("shards", "provenance"), {"watermark_text": "é"}, "shards.provenance.watermark_text", "ASCII"),
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
    data["run"]["output"] = "elsewhere"
    assert parse(data).config_hash == base
    data["edit"]["steps"] = 5
    assert parse(data).config_hash != base


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

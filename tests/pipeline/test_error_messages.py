"""Errors people read: each bad config gives one line on stderr naming the file, field and fix."""

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO


def mini(tmp_path, change):
    data = yaml.safe_load((REPO / "configs" / "mini.yaml").read_text())
    data["taxonomy"] = str(REPO / "configs" / "taxonomy.yaml")
    data["input"]["path"] = str(REPO / "configs" / "mini_seeds")
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(*keys_value):
    *keys, value = keys_value

    def change(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


CASES = [
    ("unknown key", _set("edit", "stepz", 3), "edit.stepz: unknown key; allowed:"),
    ("wrong type", _set("plan", "candidates_per_set", "two"), "plan.candidates_per_set: expected an integer"),
    ("unknown attribute value", _set("restrict_values", "race", ["white", "green"]),
     "restrict_values.race[1]: unknown value 'green' of race; allowed: white, black"),
    ("missing local model", _set("edit", "model", "./models/no-such-editor"),
     "edit.model: local model directory './models/no-such-editor' not found"),
    ("unknown tiny model", _set("caption", "model", "tiny:blip2"), "caption.model: unknown tiny model 'blip2'"),
    ("hub model not cached offline", _set("edit", "model", "timbrooks/instruct-pix2pix"),
     "edit.model: 'timbrooks/instruct-pix2pix' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"),
    ("unknown open_clip model", _set("filter", "model", "ViT-L-15"),
     "filter.model: unknown open_clip model 'ViT-L-15'; did you mean"),
]


@pytest.mark.parametrize("name, change, expected", CASES, ids=[c[0] for c in CASES])
def test_a_bad_config_gives_one_clear_line(tmp_path, name, change, expected):
    path = mini(tmp_path, change)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "pipeline", "run", str(path), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"config error: {path}: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_malformed_yaml_is_one_line_too(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run: {seed: 1\nedit: [")
    result = subprocess.run([sys.executable, "-m", "pipeline", "plan", str(path)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not valid YAML" in result.stderr

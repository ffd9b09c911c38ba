"""Errors people read: each bad config gives one line on stderr naming the file, field and fix.

The CLI runs in this process (``cli.main`` is the console script, test_cli shows): a second Python with torch and
Ray to import would cost seconds per case and show nothing more."""

import pytest
import yaml

from pipeline.commands import cli
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
def test_a_bad_config_gives_one_clear_line(tmp_path, capsys, name, change, expected):
    path = mini(tmp_path, change)
    assert cli.main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"config error: {path}: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_malformed_yaml_is_one_line_too(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("run: {seed: 1\nedit: [")
    assert cli.main(["plan", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "not valid YAML" in stderr


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([*args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_missing_input_is_one_line_with_its_exit_code_and_leaves_no_output(tmp_path, capsys):
    out = tmp_path / "out"
    mini_run = ["run", str(REPO / "configs" / "mini.yaml"), "--set", f"input.path={tmp_path / 'nope'}", "--output", str(out)]
    code, _, stderr = _cli(capsys, *mini_run)
    assert code == 5
    assert stderr.strip().count("\n") == 0 and "no such folder; check input.path" in stderr
    assert not out.exists()
    code, _, stderr = _cli(capsys, *mini_run, "--debug")
    assert code == 5 and "Traceback" in stderr


@pytest.mark.parametrize("path, options, expected", [
    ("s3://cf-seeds/people", ["--set", "input.endpoint_url=http://127.0.0.1:9"], "cannot list it"),  # nothing listens
    ("hf://datasets/someone/seeds", [], "the Hugging Face Hub is offline here"),  # HF_HUB_OFFLINE=1 in tests
])
def test_plan_never_crashes_on_an_input_it_cannot_reach(path, options, expected, capsys, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "x")
    mini = str(REPO / "configs" / "mini.yaml")
    code, stdout, stderr = _cli(capsys, "plan", mini, "--set", f"input.path={path}", *options)
    assert code == 0, stderr
    assert "seeds: 0 (input not reachable here: input.path " + path in stdout and expected in stdout
    code, _, stderr = _cli(capsys, "run", mini, "--set", f"input.path={path}", *options, "--output", "/nonexistent/out")
    assert code == 5 and stderr.strip().count("\n") == 0 and expected in stderr


def test_a_model_that_cannot_load_names_the_stage(tiny, tmp_path):
    """A stage's setup failure is one line naming the stage, also as Ray reports it from an actor."""
    import shutil

    from pipeline.commands.exit_codes import MODEL_NOT_LOADED, classify
    from pipeline.config.loading import load_config
    from stages.edit import registry
    from stages.utils.errors import StageSetupError

    broken = tmp_path / "editor"
    shutil.copytree(tiny["instruct-pix2pix"], broken)
    for weights in broken.rglob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    config = load_config(REPO / "configs" / "mini.yaml", {"edit.model": str(broken)}).config
    stage = registry.backend(config.edit.backend)(config.edit, config.filter)
    with pytest.raises(StageSetupError) as raised:
        stage.start()
    assert str(raised.value).startswith("stage edit could not set up (load its model): ")  # then the loader's error
    code, line = classify(raised.value)
    assert code == MODEL_NOT_LOADED and "\n" not in line
    wrapped = RuntimeError(f"The actor died because of an error raised in its creation task\nTraceback ...\n"
                           f"stages.utils.errors.StageSetupError: {raised.value}\n")
    wrapped_code, wrapped_line = classify(wrapped)
    assert wrapped_code == code and wrapped_line.startswith("stage edit could not set up (load its model): ")

import os
import subprocess
import sys

from pipeline.commands import cli
from tests.conftest import REPO


def test_plan_prints_graph_and_counts_without_loading_a_model(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "COUNTERFACTORY_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "plan", "configs/mini.yaml"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for stage in ("ingest", "caption", "sets", "edit", "filter", "encode", "write"):
        assert f"  {stage} " in out
    assert "seeds: 7" in out and "sets: 14" in out
    assert "diffusion: 112 edited images" in out  # 7 seeds x (2 + 6 members) x 2 candidates
    # mini.yaml's ray.fuse, each pool asking for the most of its stages' (caption 0.3 cpus, edit 0.5)
    assert "fused (ray.fuse): ingest+caption+concept in one pool: 1 actor(s), 0.3 cpus, 0 gpus, batches of 8" in out
    assert "fused (ray.fuse): sets+edit+filter+encode in one pool: 1 actor(s), 0.5 cpus, 0 gpus, batches of 8" in out
    assert not cache.exists()  # no tiny model was built, so none was loaded


def test_plan_accepts_the_production_config_without_its_input(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "plan", "configs/production.yaml", "--seeds", "1000"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "black-forest-labs/FLUX.2-klein-4B + CIDAS/clipseg-rd64-refined [flux2_klein]" in result.stdout
    assert "sets: 7000" in result.stdout and "4 steps" in result.stdout
    # 272,000 images at 317.3 TFLOP each (test_cost's by-hand klein) at 240 TFLOP/s: 99.85 h, + 0.03 h captioning
    # + 18.05 h of the judge's prefill (test_cost's by-hand judge)
    assert "editor GPU-hours: 99.85" in result.stdout and "judge GPU-hours: 18.05" in result.stdout
    assert "GPU-hours: 117.93" in result.stdout


def test_console_script_is_the_same_cli():
    script = os.path.join(os.path.dirname(sys.executable), "counterfactory")
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout and "verify" in result.stdout


def test_set_overrides_a_field_and_is_validated_like_the_file(capsys):
    assert cli.main(["plan", str(REPO / "configs" / "mini.yaml"), "--set", "plan.candidates_per_set=3"]) == 0
    assert "diffusion: 168 edited images" in capsys.readouterr().out
    assert cli.main(["plan", str(REPO / "configs" / "mini.yaml"), "--set", "edit.steps=many"]) == 2
    assert "edit.steps: expected an integer" in capsys.readouterr().err


def test_a_set_override_without_a_value_is_a_usage_error(capsys):
    assert cli.main(["run", str(REPO / "configs" / "mini.yaml"), "--set", "edit.steps"]) == 2
    assert capsys.readouterr().err.strip() == "usage error: --set expects FIELD=VALUE, got 'edit.steps'"
    assert cli.main(["plan", str(REPO / "configs" / "mini.yaml"), "--set", "edit.steps=[1"]) == 2
    assert capsys.readouterr().err.startswith("usage error: --set edit.steps: the value '[1' is not valid YAML")


def test_the_verify_hint_quotes_an_s3_uri_for_the_shell():
    from types import SimpleNamespace

    uri = "s3://b/out?endpoint_override=127.0.0.1:9000&scheme=http"
    stats = {"seeds": {"total": 1, "ok": 1, "error": 0}, "sets": {}, "candidates": {}, "shards": 0, "samples": 0}
    lines = cli._summary_lines(SimpleNamespace(stats=stats, output=uri, skipped_shards=[], seconds=1.0))
    hint = next(line for line in lines if line.startswith("check it:")).removeprefix("check it:").strip()
    # pasted into a shell, the URI stays one argument (unquoted, '&' would end the command there)
    words = subprocess.run(["sh", "-c", f"printf '%s\\n' {hint}; wait"], capture_output=True, text=True).stdout
    assert words.splitlines() == ["counterfactory", "verify", uri]

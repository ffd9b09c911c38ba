"""plan.candidates {max, stop}: its checks at load, plan's price of first_pass, and first_pass runs of both mini
configs through the stages and the writer in one process (the local executor): verify, and a rerun gives the
same bytes."""

import pytest

from pipeline.commands import cli
from pipeline.commands.plan import expected_candidates, plan_counts
from pipeline.config.errors import ConfigError
from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from tests.conftest import REPO

MINI = REPO / "configs" / "mini.yaml"


@pytest.mark.parametrize("overrides, message", [
    ({"plan.candidates": {"stop": "first"}},
     "plan.candidates.stop: 'first' is not allowed; allowed: best_of, first_pass"),
    ({"plan.candidates": {"max": 0}}, "plan.candidates.max: must be >= 1"),
    ({"plan.candidates": {"max": 3}}, "plan.candidates.max: 3 conflicts with candidates_per_set 2"),
    ({"plan.candidates": {"max": "four"}}, "plan.candidates.max: expected an integer or null"),
])
def test_bad_candidates_settings_fail_at_load_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(MINI, overrides)
    assert message in str(err.value)


def test_candidates_max_and_candidates_per_set_plan_the_same_noise_seeds():
    counts = [plan_counts(load_config(MINI, o), seeds=5)["edited_images"] for o in
              ({"plan.candidates_per_set": 4}, {"plan.candidates_per_set": 1, "plan.candidates": {"max": 4}})]
    assert counts == [5 * (2 + 6) * 4] * 2


def test_plan_prices_first_pass_from_the_pass_rate(capsys):
    assert expected_candidates(4, 0.5) == 1.875  # 1 + 0.5 + 0.25 + 0.125
    loaded = load_config(MINI, {"plan.candidates_per_set": 4, "plan.candidates": {"stop": "first_pass"}})
    counts = plan_counts(loaded, seeds=10, pass_rate=0.5)
    assert counts["edited_images"] == 150  # 10 seeds x 8 members x 1.875
    assert plan_counts(loaded, seeds=10)["edited_images"] == 320  # no pass rate: the most, 10 x 8 x 4
    assert cli.main(["plan", str(MINI), "--set", "plan.candidates_per_set=4", "--set", "plan.candidates.stop=first_pass",
                     "--seeds", "10", "--pass-rate", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "1.875 expected" in out and "diffusion: 150 edited images" in out
    with pytest.raises(SystemExit):
        cli.main(["plan", str(MINI), "--pass-rate", "0"])
    assert "--pass-rate: must be a number in (0, 1]" in capsys.readouterr().err


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".tar", ".parquet")}


@pytest.mark.parametrize("config", ["mini.yaml", "mini_generate.yaml"])
def test_first_pass_runs_verify_and_rerun_byte_identical(config, tmp_path, tiny_cache):
    overrides = {"plan.candidates": {"stop": "first_pass"}}
    first, second = tmp_path / "a", tmp_path / "b"
    run_local(load_config(REPO / "configs" / config, overrides), str(first), limit=3)
    assert verify_output(str(first))[0] == []
    assert cli.main(["verify", str(first)]) == 0
    run_local(load_config(REPO / "configs" / config, overrides), str(second), limit=3)
    got, again = files(first), files(second)
    assert any(name.endswith(".tar") for name in got) and got == again

"""The Ray Data internals the project relies on are checked before a run: a Ray without one is refused in one line.

Another Ray is simulated by taking the internal away from the installed one (monkeypatched on the real modules and
classes), as a release that renamed or dropped it would; nothing of Ray is mocked."""

import re
import sys
import tomllib
import types

import pytest
from packaging.requirements import Requirement

from pipeline.commands import cli, exit_codes
from pipeline.config.sections import RayConfig
from pipeline.execution import ray_seams
from tests.conftest import REPO

BACKPRESSURE = "ray.data._internal.execution.backpressure_policy"


def _delattr(path: str, name: str):
    return lambda mp: mp.delattr(_module_or_class(path), name)


def _module_or_class(path: str):
    import importlib

    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def _no_source(module: str):
    """The module replaced by one Ray's source cannot be read from (as if it had gone)."""
    return lambda mp: mp.setitem(sys.modules, module, types.ModuleType(module))


def _renamed_topology(mp):
    policy = _module_or_class(f"{BACKPRESSURE}:BackpressurePolicy")

    def init(self, data_context, topology, resource_manager):
        self._data_context, self._graph, self._resource_manager = data_context, topology, resource_manager
    mp.setattr(policy, "__init__", init)


def _without_metric(name: str):
    def change(mp):
        metrics = _module_or_class("ray.data._internal.execution.interfaces.op_runtime_metrics:OpRuntimeMetrics")
        mp.setattr(metrics, "__dataclass_fields__",
                   {k: v for k, v in metrics.__dataclass_fields__.items() if k != name})
    return change


def _renamed_queues(mp):
    queue = _module_or_class("ray.data._internal.execution.streaming_executor_state:OpBufferQueue")

    def init(self, num_splits):
        self._parts = []
    mp.setattr(queue, "__init__", init)


def _map_operator_without_stats(mp):
    module = _module_or_class("ray.data._internal.execution.operators.map_operator")

    class MapOperator(module.MapOperator):  # its source: a map operator that keeps no per-block list
        pass
    mp.setattr(module, "MapOperator", MapOperator)


def _ruleset_made_per_call(mp):
    optimizers = _module_or_class("ray.data._internal.logical.optimizers")
    mp.setattr(optimizers, "get_physical_ruleset", lambda: optimizers.Ruleset(list(optimizers._PHYSICAL_RULESET)))


# One removal per seam, in SEAMS' order: each must be reported as that seam, and only it.
REMOVALS = [
    _delattr(BACKPRESSURE, "ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY"),
    _no_source("ray.data._internal.execution.streaming_executor"),
    _renamed_topology,
    _delattr(f"{BACKPRESSURE}:BackpressurePolicy", "max_task_output_bytes_to_read"),
    _delattr("ray.data._internal.execution.operators.input_data_buffer", "InputDataBuffer"),
    _without_metric("row_outputs_taken"),
    _renamed_queues,
    _map_operator_without_stats,
    _delattr("ray.data._internal.logical.operators.map_operator", "StreamingRepartition"),
    _delattr("ray.data:Dataset", "_from_parent"),
    _ruleset_made_per_call,
    _delattr("ray.data._internal.logical.interfaces:PhysicalPlan", "op_map"),
    _delattr("ray.data._internal.execution.operators.map_transformer:MapTransformer", "get_transform_fns"),
]


def test_the_installed_ray_has_every_seam():
    assert len(ray_seams.SEAMS) == len(REMOVALS) == 13
    assert [s.probe() for s in ray_seams.SEAMS] == [True] * 13  # True, not merely no error
    ray_seams.check_ray_seams()


@pytest.mark.parametrize("index", range(len(REMOVALS)))
def test_each_seam_taken_away_is_found_missing(monkeypatch, index):
    REMOVALS[index](monkeypatch)
    assert ray_seams.missing_seams() == [ray_seams.SEAMS[index]]


def test_the_executor_refuses_to_start_on_a_ray_without_one(monkeypatch):
    from pipeline.execution.ray_executor import init_ray

    monkeypatch.delattr(_module_or_class("ray.data._internal.logical.operators.map_operator"), "StreamingRepartition")
    with pytest.raises(ray_seams.RaySeamMissing, match=re.escape("ray[data,default]>=2.60,<2.61")):
        init_ray(RayConfig(num_cpus=1))


@pytest.mark.parametrize("index", [0, 3, 8])  # the bound's policy list, its hook, blocks_of's operator
def test_a_run_on_a_ray_without_one_is_one_line_and_its_exit_code_and_writes_nothing(tmp_path, capsys, monkeypatch,
                                                                                    index):
    import ray

    REMOVALS[index](monkeypatch)
    out = tmp_path / "out"
    code = cli.main(["run", str(REPO / "configs" / "mini.yaml"), "--set", f"input.path={REPO / 'configs' / 'mini_seeds'}",
                     "--output", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == exit_codes.WRONG_RAY == 9
    assert len(lines) == 1, lines
    seam = ray_seams.SEAMS[index]
    assert lines[0].startswith(f"error: counterfactory needs ray[data,default]>=2.60,<2.61: this Ray {ray.__version__} "
                               f"lacks {seam.what} ({seam.user} relies on it); pip install")
    assert not out.exists()


def test_pyproject_pins_the_ray_the_seams_name_and_the_tests_run():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if Requirement(d).name == "ray"]
    assert pins == [ray_seams.RAY_NEEDED] == ["ray[data,default]>=2.60,<2.61"]
    import ray

    assert Requirement(ray_seams.RAY_NEEDED).specifier.contains(ray.__version__)
    assert "ray==2.60.0" in (REPO / "constraints.txt").read_text().splitlines()

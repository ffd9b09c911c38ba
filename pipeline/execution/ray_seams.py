"""The Ray Data internals this project relies on, each named once with a probe, checked before a run starts.

Ray Data has no public hook for a backpressure policy, an operator's kept block stats, a cheap block-splitting
operator or a stage's output block shape; ray_policies, ray_input, ray_block_stats, ray_executor.blocks_of and
ray_output use its internals. A Ray that renamed one would not fail: the run would go unbounded, keep every
block's stats, split blocks at a CPU a task or hold a stage's rows to the end of its task. So ``check_ray_seams`` probes each one first and refuses the run, in one line naming the Ray it needs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

# The pin in pyproject.toml (tests/pipeline/test_ray_seams.py checks they agree): the minor the tests run.
RAY_NEEDED = "ray[data,default]>=2.60,<2.61"

_BACKPRESSURE = "ray.data._internal.execution.backpressure_policy"
_STATE = "ray.data._internal.execution.streaming_executor_state"


class RaySeamMissing(RuntimeError):
    """The installed Ray lacks an internal this project relies on."""


@dataclass(frozen=True)
class Seam:
    what: str  # the internal, as a reader of the installed Ray would look for it
    user: str  # the code that relies on it
    probe: Callable[[], bool]  # True when it is there as relied on (an ImportError or AttributeError: not there)


def _get(path: str):
    """The object at a dotted ``module.attr.attr`` path."""
    module, _, rest = path.partition(":")
    obj = importlib.import_module(module)
    for name in filter(None, rest.split(".")):
        obj = getattr(obj, name)
    return obj


def _takes(path: str, *params: str) -> bool:
    return set(params) <= set(inspect.signature(_get(path)).parameters)


def _says(path: str, *texts: str) -> bool:
    """Ray's own source at ``path`` contains each of ``texts`` (for what only shows at run time: an attribute
    an ``__init__`` sets, a method a loop calls)."""
    source = inspect.getsource(_get(path))
    return all(text in source for text in texts)


def _policy_keeps_topology() -> bool:
    from ray.data import DataContext

    policy_class = _get(f"{_BACKPRESSURE}:BackpressurePolicy")
    topology = {}
    return policy_class(DataContext.get_current(), topology, None)._topology is topology


def _metrics_fields(*names: str) -> bool:
    metrics = _get("ray.data._internal.execution.interfaces.op_runtime_metrics:OpRuntimeMetrics")
    return set(names) <= {f.name for f in dataclasses.fields(metrics)}


def _queue_counts_rows() -> bool:
    queues = _get(f"{_STATE}:OpBufferQueue")(1)._queues
    return len(queues) == 1 and queues[0].num_rows() == 0


def _physical_rules_take_one() -> bool:
    """The physical ruleset is one shared object with ``add``, iterated for its rule classes (read, not changed)."""
    get = _get("ray.data._internal.logical.optimizers:get_physical_ruleset")
    ruleset = get()
    return ruleset is get() and callable(ruleset.add) and all(isinstance(rule, type) for rule in ruleset)


SEAMS = (
    Seam(f"{_BACKPRESSURE}.ENABLED_BACKPRESSURE_POLICIES(_CONFIG_KEY), read by get_backpressure_policies",
         "ray_policies.add_policy",
         lambda: isinstance(_get(f"{_BACKPRESSURE}:ENABLED_BACKPRESSURE_POLICIES"), list)
         and isinstance(_get(f"{_BACKPRESSURE}:ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY"), str)
         and _says(f"{_BACKPRESSURE}:get_backpressure_policies", "ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY")),
    Seam("StreamingExecutor building its policies with get_backpressure_policies", "ray_policies.add_policy",
         lambda: _says("ray.data._internal.execution.streaming_executor", "get_backpressure_policies(")),
    Seam("BackpressurePolicy(data_context, topology, resource_manager) keeping the topology as _topology",
         "ray_input.seeds_in_flight_policy, ray_block_stats.capped_block_stats_policy", _policy_keeps_topology),
    Seam("BackpressurePolicy.can_add_input(op) and max_task_output_bytes_to_read(op), asked by the executor",
         "ray_input.seeds_in_flight_policy",
         lambda: _takes(f"{_BACKPRESSURE}:BackpressurePolicy.can_add_input", "op")
         and _takes(f"{_BACKPRESSURE}:BackpressurePolicy.max_task_output_bytes_to_read", "op")
         and _says(_STATE, ".can_add_input(op)", ".max_task_output_bytes_to_read(op)")),
    Seam("ray.data._internal.execution.operators.input_data_buffer.InputDataBuffer", "ray_input.seeds_in_flight_policy",
         lambda: inspect.isclass(_get("ray.data._internal.execution.operators.input_data_buffer:InputDataBuffer"))),
    Seam("OpRuntimeMetrics.num_inputs_received, rows_task_outputs_generated and row_outputs_taken",
         "ray_input.seeds_in_flight_policy",
         lambda: _metrics_fields("num_inputs_received", "rows_task_outputs_generated", "row_outputs_taken")
         and _says("ray.data._internal.execution.interfaces.physical_operator:PhysicalOperator", "def metrics(")),
    Seam("OpState.output_queue, an OpBufferQueue whose _queues count num_rows()", "ray_input.seeds_in_flight_policy",
         lambda: _says(f"{_STATE}:OpState.__init__", "self.output_queue") and _queue_counts_rows()),
    Seam("MapOperator._output_blocks_stats, the list of each block's stats", "ray_block_stats.capped_block_stats_policy",
         lambda: _says("ray.data._internal.execution.operators.map_operator:MapOperator",
                       "self._output_blocks_stats: List", "self._output_blocks_stats.extend(")),
    Seam("ray.data._internal.logical.operators.map_operator.StreamingRepartition(target_num_rows_per_block, "
         "input_dependencies, ray_remote_args, compute)", "ray_executor.blocks_of",
         lambda: _takes("ray.data._internal.logical.operators.map_operator:StreamingRepartition",
                        "target_num_rows_per_block", "input_dependencies", "ray_remote_args", "compute")),
    Seam("ray.data._internal.logical.interfaces.LogicalPlan(dag, context), Dataset._logical_plan and "
         "Dataset._from_parent(parent, logical_plan)", "ray_executor.blocks_of",
         lambda: _takes("ray.data._internal.logical.interfaces:LogicalPlan", "dag", "context")
         and _says("ray.data:Dataset.__init__", "self._logical_plan = ")
         and _takes("ray.data:Dataset._from_parent", "parent", "logical_plan")
         and _takes("ray.data:TaskPoolStrategy", "size")),
    Seam("ray.data._internal.logical.optimizers.get_physical_ruleset(), one shared Ruleset with add(rule)",
         "ray_output.stream_batches", _physical_rules_take_one),
    Seam("a physical-plan Rule (apply, dependencies) after FuseOperators, seeing plan.op_map and MapBatches",
         "ray_output.batch_blocks_rule",
         lambda: _takes("ray.data._internal.logical.interfaces:Rule.apply", "plan")
         and inspect.ismethod(_get("ray.data._internal.logical.interfaces:Rule.dependencies"))
         and inspect.isclass(_get("ray.data._internal.logical.rules:FuseOperators"))
         and inspect.isclass(_get("ray.data._internal.logical.operators.map_operator:MapBatches"))
         and isinstance(_get("ray.data._internal.logical.interfaces:PhysicalPlan").op_map, property)),
    Seam("MapOperator._map_transformer.get_transform_fns(), a BatchMapTransformFn's _output_block_size_option "
         "and OutputBlockSizeOption.of(disable_block_shaping)", "ray_output.batch_blocks_rule",
         lambda: _says("ray.data._internal.execution.operators.map_operator:MapOperator.__init__",
                       "self._map_transformer = ")
         and callable(_get("ray.data._internal.execution.operators.map_transformer:MapTransformer.get_transform_fns"))
         and _says("ray.data._internal.execution.operators.map_transformer:MapTransformFn.__init__",
                   "self._output_block_size_option = ")
         and issubclass(_get("ray.data._internal.execution.operators.map_transformer:BatchMapTransformFn"),
                        _get("ray.data._internal.execution.operators.map_transformer:MapTransformFn"))
         and _takes("ray.data._internal.output_buffer:OutputBlockSizeOption.of", "disable_block_shaping")),
)


def missing_seams(seams=SEAMS) -> list[Seam]:
    """The seams the installed Ray lacks."""
    missing = []
    for seam in seams:
        try:
            present = seam.probe()
        except (ImportError, AttributeError, TypeError, ValueError, OSError):  # OSError: no source to read
            present = False
        if not present:
            missing.append(seam)
    return missing


def refusal(missing: list[Seam]) -> str:
    """The one line a run refused for ``missing`` seams says."""
    import ray

    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (f"counterfactory needs {RAY_NEEDED}: this Ray {ray.__version__} lacks {missing[0].what} "
            f"({missing[0].user} relies on it){more}; pip install '{RAY_NEEDED}'")


def check_ray_seams() -> None:
    """Raise ``RaySeamMissing`` (one line) unless the installed Ray has every seam."""
    missing = missing_seams()
    if missing:
        raise RaySeamMissing(refusal(missing))

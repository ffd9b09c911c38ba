"""How rows leave the stages on Ray: each stage's batch as its own block, and each block to the driver as it lands.

Two of Ray Data's defaults held every row of a mini-run to its end (configs/mini.yaml, 64 seeds, 8 shards, traced
per batch in the stages and at Ray Data's hand-offs in the driver):
- A ``map_batches`` task returns its batches as one block when the task ends (its output is shaped to
  ``target_max_block_size``, 128 MiB): a CPU stage's task takes a whole input block of 32 seeds or more, so the
  edit stage handed on the 64 sets of seeds 0-31 only after its 32nd call, 57 s after its first.
- ``iter_batches`` with its default ``prefetch_batches=1`` takes the next block from the graph before it hands the
  current one on, so each block waited in the driver for the one after it: the block of seeds 0-31 left the graph
  at 193 s and reached the assembler at 233 s, with the last block.
"""

from __future__ import annotations

import functools

STREAMED_KEY = "counterfactory.batch_blocks"


def stream_batches(context) -> None:
    """On a Dataset's DataContext: every ``map_batches`` stage of its graph hands on each batch as a block when
    the batch is done (a physical-plan rule, after Ray Data's operator fusion; ray_seams checks at start-up that
    this Ray has what the rule uses)."""
    from ray.data._internal.logical.optimizers import get_physical_ruleset

    rule = batch_blocks_rule()
    ruleset = get_physical_ruleset()
    if rule not in list(ruleset):
        ruleset.add(rule)
    context.set_config(STREAMED_KEY, True)


def batches_as_done(ds):
    """The graph's output blocks as pyarrow tables, each as soon as the graph yields it (no local prefetch, which
    holds a block until the next one is out)."""
    return ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0)


@functools.cache
def batch_blocks_rule() -> type:
    """The rule class (built on first use: Ray Data is imported only where a graph is built). It is in Ray Data's
    process-wide ruleset, so it leaves alone every plan whose context ``stream_batches`` did not mark."""
    from ray.data._internal.execution.operators.map_transformer import BatchMapTransformFn
    from ray.data._internal.logical.interfaces import Rule
    from ray.data._internal.logical.operators.map_operator import MapBatches
    from ray.data._internal.logical.rules import FuseOperators
    from ray.data._internal.output_buffer import OutputBlockSizeOption

    class StageBatchBlocks(Rule):
        @classmethod
        def dependencies(cls):
            return [FuseOperators]

        def apply(self, plan):
            if not plan.context.get_config(STREAMED_KEY, False):
                return plan
            ops, seen = [plan.dag], set()
            while ops:
                op = ops.pop()
                if id(op) in seen:
                    continue
                seen.add(id(op))
                ops.extend(op.input_dependencies)
                transformer = getattr(op, "_map_transformer", None)
                if (not isinstance(plan.op_map.get(op), MapBatches) or transformer is None
                        or getattr(op, "target_max_block_size_override", None) is not None):
                    continue  # (an override would be applied to the last function at run time)
                last = transformer.get_transform_fns()[-1]
                if isinstance(last, BatchMapTransformFn):
                    last._output_block_size_option = OutputBlockSizeOption.of(disable_block_shaping=True)
            return plan

    return StageBatchBlocks

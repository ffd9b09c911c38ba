"""Shards from rows that arrive in any order: the driver's side of a run without ``preserve_order``.

A shard covers a fixed range of seeds and every seed becomes one row per axis, so the driver knows how many
rows each shard waits for. A complete shard is written once every lower seed has been ingested (the
registry's watermark), because two answers depend on lower seeds and must not depend on arrival order:
- a copy of an earlier image gets exactly the rows ingest gives a copy of the lowest seed with that image
  (ingest may have let it through, read before its original, or named a copy of the original);
- a seed id already used by a lower seed that stayed valid makes the later seed's sets duplicates.
Both are decided by seed index alone, so the output is byte for byte that of an ordered run, whatever order
the rows came in, and a slow set holds back only its own shard.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from schemas.records import STATUS_OK
from stages.base import fail_set
from stages.ingest.reading import duplicate_reason


class ShardAssembler:
    def __init__(self, seed_index: Sequence[int], shard_index: Sequence[int], rows_per_seed: int, registry,
                 write: Callable[[int, list], None], copy_rows: Callable[[int, int, str], list[dict]]):
        """``seed_index``/``shard_index``: the seeds this run makes and their shards (arrays: per-seed state is
        numpy, per-shard state Python); ``registry``: claim/watermark/decide (SeenRegistry, or a proxy to its
        actor); ``write(shard, rows)`` writes a shard; ``copy_rows(seed_index, original, content_id)`` gives a
        copy's rows as ingest makes them."""
        self.registry, self.write, self.copy_rows = registry, write, copy_rows
        seeds, shards = np.asarray(seed_index, np.int64), np.asarray(shard_index, np.int64)
        order = np.lexsort((seeds, shards))
        seeds, shards = seeds[order], shards[order]
        ids, starts, counts = np.unique(shards, return_index=True, return_counts=True)
        self.last_seed = dict(zip(ids.tolist(), seeds[starts + counts - 1].tolist()))  # shard -> its highest seed
        self.expected = dict(zip(ids.tolist(), (counts * rows_per_seed).tolist()))
        self.rows: dict[int, list[dict]] = defaultdict(list)
        self.complete: set[int] = set()  # every row in, not yet written
        # seed index -> decoded and no copy (for repeated seed ids): 1 valid, 0 not, -1 not yet settled
        self.seed_valid = np.full(int(seeds.max()) + 1 if len(seeds) else 0, -1, np.int8)
        self.written: list[int] = []

    def add(self, row: dict) -> None:
        shard = row["shard_index"]
        self.rows[shard].append(row)
        if len(self.rows[shard]) == self.expected[shard]:
            self.complete.add(shard)

    def flush(self, final: bool = False) -> None:
        """Write every complete shard whose answers are final; ``final``: all rows are in, write everything."""
        while self.complete:
            watermark = self.registry.watermark()
            progressed = False
            for shard in sorted(self.complete):
                if watermark is not None and self.last_seed[shard] >= watermark:
                    break  # a lower seed is still being ingested
                rows = self._settle(shard)
                if rows is None:
                    continue  # waits for a lower seed's shard to know whether its seed id stands
                self.write(shard, rows)
                self.complete.discard(shard)
                del self.rows[shard]
                self.written.append(shard)
                progressed = True
            if not progressed:
                if final and self.complete:
                    raise RuntimeError(f"shards {sorted(self.complete)} could not be settled (watermark {watermark})")
                return
        if final and len(self.written) != len(self.expected):
            missing = sorted(set(self.expected) - set(self.written))
            raise RuntimeError(f"the run ended without every row of shards {missing[:10]}")

    def _settle(self, shard: int) -> list[dict] | None:
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for row in self.rows[shard]:
            by_seed[row["seed_index"]].append(row)
        seeds = sorted(by_seed)
        # A copy's rows are rebuilt whatever became of them: read before its original it went through the run
        # (and may have failed in a later stage); caught at ingest it may name a copy claimed before the original.
        asks = [(i, by_seed[i][0].get("content_id"),
                 by_seed[i][0]["seed_id"] if by_seed[i][0]["status"] == STATUS_OK else None) for i in seeds]
        answers = dict(zip(seeds, self.registry.decide(asks)))
        for (i, content_id, _), (copy_of, _, _) in zip(asks, answers.values()):
            if copy_of is not None:  # a copy gets its rows from the original it copies, as known now (final)
                by_seed[i] = self.copy_rows(i, copy_of, content_id)
            self.seed_valid[i] = by_seed[i][0]["status"] == STATUS_OK
        for i in seeds:
            copy_of, finished, lower = answers[i]
            if self.seed_valid[i] != 1 or copy_of is not None:
                continue
            if any(self.seed_valid[j] < 0 for j in lower):
                return None
            valid = [j for j in lower if self.seed_valid[j] == 1]
            first = min([j for j in (finished, *valid) if j is not None], default=None)
            if first is not None and first < i:
                for row in by_seed[i]:
                    fail_set(row, duplicate_reason(first))
        return [row for i in seeds for row in by_seed[i]]


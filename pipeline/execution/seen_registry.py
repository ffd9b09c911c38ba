"""The shared record of the seeds a run has ingested, for dedupe without a pass over the input first.

Ingest claims each seed's content id (the hash of its bytes) as it reads it: a seed whose content was claimed
at a lower seed index is a duplicate at once, and skips the GPU. Ingest runs in parallel and out of order, so
a copy can be claimed before its original; the writer then asks again once every lower seed has been ingested
(the watermark), and turns such a late copy into exactly the rows an early one gets. The outcome depends only
on seed indices, never on arrival order: the same output as an ordered run, byte for byte.

This module is the run's one dedupe rule, shared by both executors (Ray: ``ray_executor`` makes the registry an
actor; local: the plain class): ingest claims (``stages.ingest.decode``), the registry decides, the
``ShardAssembler`` applies its answers before a shard is written, and ``copy_rows_maker`` gives a late copy the
rows ingest gives an early one. A resumed run starts the registry from the completed shards' manifests
(``pipeline.output.state.seen_in_completed``: their content ids and seed ids).
"""

from __future__ import annotations

import bisect
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa


class SeenRegistry:
    def __init__(self, todo: Sequence[int], seen_content: dict[str, int], seen_seed_ids: dict[str, int]):
        """``todo``: the seed indices this run ingests; ``seen_*``: first indices in shards already complete."""
        self.todo = np.sort(np.asarray(todo, np.int64))
        self.below = 0  # todo[:below] are all ingested: the watermark is todo[below]
        self.ingested: set[int] = set()  # ingested at or above the watermark
        self.content: dict[str, int] = dict(seen_content)  # content id -> lowest index claiming it
        self.seed_ids: dict[str, list[tuple[int, str | None]]] = {}  # seed id -> [(index, content id)] ascending
        self.finished_seed_ids = dict(seen_seed_ids)

    def claim(self, claims: list[tuple[int, str | None, str | None]]) -> list[int | None]:
        """``(seed_index, content_id, seed_id)`` per ingested seed: the content id when its bytes were read and
        dedupe is on, the seed id when it decoded. Returns per claim the lowest index holding its content so
        far (None: no content id); a seed whose content is held lower is a copy, and its seed id is not kept."""
        owners = []
        for index, content_id, seed_id in claims:
            if self.below < len(self.todo) and index >= self.todo[self.below]:  # a retried batch may claim again
                self.ingested.add(index)  # dropped again as the watermark passes it
            owner = None
            if content_id is not None:
                owner = self.content[content_id] = min(self.content.get(content_id, index), index)
            known = self.seed_ids.setdefault(seed_id, []) if seed_id is not None else None
            if known is not None and (owner is None or owner == index) and (index, content_id) not in known:
                bisect.insort(known, (index, content_id))  # a retried batch claims again: kept once
            owners.append(owner)
        return owners

    def watermark(self) -> int | None:
        """Every seed below this index has been ingested (None: all of them)."""
        while self.below < len(self.todo) and int(self.todo[self.below]) in self.ingested:
            self.ingested.discard(int(self.todo[self.below]))
            self.below += 1
        return int(self.todo[self.below]) if self.below < len(self.todo) else None

    def decide(self, seeds: list[tuple[int, str | None, str | None]]) -> list[tuple[int | None, int | None, list[int]]]:
        """For ``(seed_index, content_id, seed_id)`` below the watermark: the index of the original it copies
        (None: no copy); the first index of its seed id in a completed shard (None: none); and this run's
        lower indices that decoded the same seed id and are no copies. The writer keeps a seed id for the lowest
        of those whose seed stayed valid through the run; a later seed with it repeats it."""
        out = []
        for index, content_id, seed_id in seeds:
            owner = self.content.get(content_id) if content_id is not None else None
            copy_of = owner if owner is not None and owner < index else None
            finished, lower = None, []
            if seed_id is not None and copy_of is None:
                finished = self.finished_seed_ids.get(seed_id)
                for other, other_content in self.seed_ids.get(seed_id, ()):
                    if other >= index:
                        break
                    if other_content is None or self.content.get(other_content) == other:
                        lower.append(other)
            out.append((copy_of, finished, lower))
        return out


def copy_rows_maker(todo: pa.Table, loaded) -> Callable[[int, int, str], list[dict]]:
    """The rows a copy gets when ingest catches it (an error seed, planned into error sets), made on the
    driver for a copy that was read before its original; no model is involved. ``loaded``: the LoadedConfig."""
    from stages.ingest.decode import DecodeSeeds
    from stages.ingest.reading import duplicate_reason
    from stages.sets.stage import SetPlanner

    config = loaded.config
    order = todo.column("seed_index").to_numpy()  # ascending
    decode, planner = DecodeSeeds(config.input), SetPlanner(config.plan, loaded.taxonomy, config.run.seed)

    def copy_rows(seed_index: int, original: int, content_id: str) -> list[dict]:
        ref = todo.slice(int(np.searchsorted(order, seed_index)), 1).to_pylist()[0]
        ref.update(source_error=duplicate_reason(original), source_seed_id=content_id)
        return planner.process_rows(decode.process_rows([ref]))

    return copy_rows
